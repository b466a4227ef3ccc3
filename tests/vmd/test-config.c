/* SPDX-License-Identifier: MIT */
/*
 * test-config.c - the domain config validator: defaults, every field's
 * checks and bounds, unknown fields, and the JSON round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "domain.h"
#include "test-util.h"

/* Parse @text; on failure check the code and that the message has @needle. */
static int parse_text(const char *text, struct vmd_domain_config *cfg, moor_error *err)
{
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    int rc = vmd_config_parse(o, cfg, err);
    json_object_put(o);
    return rc;
}

static void expect_refused(const char *text, const char *needle)
{
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;

    memset(&cfg, 0xa5, sizeof(cfg));
    struct vmd_domain_config before = cfg;
    int rc = parse_text(text, &cfg, &err);
    if (rc != -EINVAL)
        fail_msg("%s: expected -EINVAL, got %d", text, rc);
    tu_assert_contains(moor_error_message(&err), needle);
    assert_memory_equal(&cfg, &before, sizeof(cfg)); /* untouched */
}

static void test_defaults(void **state)
{
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(parse_text("{\"name\":\"vm1\"}", &cfg, &err), 0);
    assert_string_equal(cfg.name, "vm1");
    assert_int_equal(cfg.memory_mib, 128);
    assert_int_equal(cfg.vcpus, 1);
    assert_int_equal(cfg.machine, VMD_MACHINE_PC);
    assert_int_equal(cfg.accel, VMD_ACCEL_AUTO);
    assert_string_equal(cfg.emulator, "qemu-system-x86_64");
    assert_null(cfg.extra_args);
    assert_int_equal(cfg.n_extra_args, 0);
    moor_uuid zero = {0};
    assert_false(moor_uuid_equal(&cfg.uuid, &zero)); /* generated */
    vmd_config_clear(&cfg);
    vmd_config_clear(NULL);
}

static void test_all_fields_round_trip(void **state)
{
    const char *text = "{\"name\":\"web-1.a_b\",\"uuid\":\"6f1c2a3b-4d5e-4f60-8172-8394a5b6c7d8\","
                       "\"memory_mib\":1048576,\"vcpus\":64,\"machine\":\"q35\","
                       "\"emulator\":\"/usr/bin/qemu-system-x86_64\",\"accel\":\"tcg\","
                       "\"extra_args\":[\"-device\",\"virtio-rng-pci\"]}";
    struct vmd_domain_config cfg, again, copy;
    moor_error err = MOOR_ERROR_INIT;

    (void)state;
    assert_int_equal(parse_text(text, &cfg, &err), 0);
    assert_int_equal(cfg.memory_mib, 1048576);
    assert_int_equal(cfg.vcpus, 64);
    assert_int_equal(cfg.machine, VMD_MACHINE_Q35);
    assert_int_equal(cfg.accel, VMD_ACCEL_TCG);
    assert_int_equal(cfg.n_extra_args, 2);
    assert_string_equal(cfg.extra_args[1], "virtio-rng-pci");

    struct json_object *o = vmd_config_to_json(&cfg);
    assert_non_null(o);
    assert_int_equal(vmd_config_parse(o, &again, &err), 0);
    json_object_put(o);
    assert_string_equal(again.name, cfg.name);
    assert_true(moor_uuid_equal(&again.uuid, &cfg.uuid));
    assert_int_equal(again.memory_mib, cfg.memory_mib);
    assert_string_equal(again.emulator, cfg.emulator);
    assert_string_equal(again.extra_args[0], "-device");

    assert_int_equal(vmd_config_copy(&copy, &cfg), 0);
    vmd_config_clear(&cfg);
    assert_string_equal(copy.extra_args[1], "virtio-rng-pci");
    assert_string_equal(copy.emulator, "/usr/bin/qemu-system-x86_64");
    vmd_config_clear(&copy);
    vmd_config_clear(&again);
}

static void test_bounds_accepted(void **state)
{
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;
    char name[VMD_NAME_MAX + 32];

    (void)state;
    memset(name, 'a', VMD_NAME_MAX);
    name[VMD_NAME_MAX] = '\0';
    char text[256];
    snprintf(text, sizeof(text),
             "{\"name\":\"%s\",\"memory_mib\":1,\"vcpus\":1,\"machine\":\"none\","
             "\"accel\":\"kvm\",\"emulator\":\"qemu-kvm\",\"extra_args\":[]}",
             name);
    assert_int_equal(parse_text(text, &cfg, &err), 0);
    assert_int_equal(strlen(cfg.name), VMD_NAME_MAX);
    assert_int_equal(cfg.machine, VMD_MACHINE_NONE);
    assert_int_equal(cfg.accel, VMD_ACCEL_KVM);
    assert_string_equal(cfg.emulator, "qemu-kvm");
    vmd_config_clear(&cfg);
}

static void test_refusals(void **state)
{
    char text[512], longname[VMD_NAME_MAX + 2];

    (void)state;
    expect_refused("[]", "expected a JSON object");
    expect_refused("{}", "name: required");
    expect_refused("{\"name\":\"vm\",\"colour\":\"red\"}", "unknown field 'colour'");
    expect_refused("{\"name\":1}", "name: expected a string");
    expect_refused("{\"name\":\"\"}", "name: must be 1..64");
    memset(longname, 'b', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    snprintf(text, sizeof(text), "{\"name\":\"%s\"}", longname);
    expect_refused(text, "name: must be 1..64 characters, not 65");
    expect_refused("{\"name\":\"a b\"}", "name: 'a b' has a character outside");
    expect_refused("{\"name\":\"a/b\"}", "outside [A-Za-z0-9._-]");
    expect_refused("{\"name\":\"a\\u0000b\"}", "name: contains a NUL byte");
    expect_refused("{\"name\":\"6f1c2a3b-4d5e-4f60-8172-8394a5b6c7d8\"}", "name: '6f1c");
    expect_refused("{\"name\":\"vm\",\"uuid\":\"nope\"}", "uuid: 'nope' is not a canonical UUID");
    expect_refused("{\"name\":\"vm\",\"uuid\":7}", "uuid: expected a string");
    expect_refused("{\"name\":\"vm\",\"memory_mib\":0}",
                   "memory_mib: 0 is out of range 1..1048576");
    expect_refused("{\"name\":\"vm\",\"memory_mib\":1048577}", "memory_mib: 1048577 is out of");
    expect_refused("{\"name\":\"vm\",\"memory_mib\":-5}", "memory_mib: -5 is out of range");
    expect_refused("{\"name\":\"vm\",\"memory_mib\":1.5}", "memory_mib: expected an integer");
    expect_refused("{\"name\":\"vm\",\"memory_mib\":\"64\"}", "memory_mib: expected an integer");
    expect_refused("{\"name\":\"vm\",\"memory_mib\":99999999999999999999}", "memory_mib:");
    expect_refused("{\"name\":\"vm\",\"vcpus\":0}", "vcpus: 0 is out of range 1..64");
    expect_refused("{\"name\":\"vm\",\"vcpus\":65}", "vcpus: 65 is out of range 1..64");
    expect_refused("{\"name\":\"vm\",\"vcpus\":true}", "vcpus: expected an integer");
    expect_refused("{\"name\":\"vm\",\"machine\":\"virt\"}", "machine: 'virt' is not one of pc");
    expect_refused("{\"name\":\"vm\",\"machine\":null}", "machine: expected a string");
    expect_refused("{\"name\":\"vm\",\"accel\":\"hvf\"}", "accel: 'hvf' is not one of auto");
    expect_refused("{\"name\":\"vm\",\"emulator\":\"\"}", "emulator: must be 1..");
    expect_refused("{\"name\":\"vm\",\"emulator\":\"bin/qemu\"}",
                   "emulator: 'bin/qemu' is neither");
    expect_refused("{\"name\":\"vm\",\"emulator\":\"/usr/bin/q\\u0007\"}", "control character");
    expect_refused("{\"name\":\"vm\",\"emulator\":[]}", "emulator: expected a string");
    expect_refused("{\"name\":\"vm\",\"extra_args\":\"-S\"}", "extra_args: expected an array");
    expect_refused("{\"name\":\"vm\",\"extra_args\":[\"a\",3]}",
                   "extra_args[1]: expected a string");
}

static void test_extra_args_cap(void **state)
{
    struct vmd_domain_config cfg;
    moor_error err = MOOR_ERROR_INIT;
    struct json_object *o = json_object_new_object(), *arr = json_object_new_array();

    (void)state;
    json_object_object_add(o, "name", json_object_new_string("vm"));
    json_object_object_add(o, "extra_args", arr);
    for (int i = 0; i < VMD_EXTRA_ARGS_MAX; i++)
        json_object_array_add(arr, json_object_new_string("-x"));
    assert_int_equal(vmd_config_parse(o, &cfg, &err), 0);
    assert_int_equal(cfg.n_extra_args, VMD_EXTRA_ARGS_MAX);
    vmd_config_clear(&cfg);
    json_object_array_add(arr, json_object_new_string("-x"));
    assert_int_equal(vmd_config_parse(o, &cfg, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "extra_args: 65 arguments, at most 64");

    char big[5000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_object_object_add(o, "extra_args", json_object_new_array());
    json_object_object_get_ex(o, "extra_args", &arr);
    json_object_array_add(arr, json_object_new_string(big));
    assert_int_equal(vmd_config_parse(o, &cfg, &err), -EINVAL);
    tu_assert_contains(moor_error_message(&err), "extra_args[0]: longer than 4096 bytes");
    json_object_put(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_defaults), TU_TEST(test_all_fields_round_trip), TU_TEST(test_bounds_accepted),
        TU_TEST(test_refusals), TU_TEST(test_extra_args_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
