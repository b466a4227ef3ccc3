/* SPDX-License-Identifier: MIT */
/*
 * request.h - the typed requests the API side runs (STYLE rule 16: parse,
 * then act). api.c matches the route, checks the id, looks the domain up
 * and parses the body to JSON; the resource's parser (req-domains.c,
 * req-misc.c) turns that JSON into the fields below, refusing unknown
 * fields; the resource's runner calls exactly one op. Runners never see
 * raw JSON or the URL.
 */
#ifndef MOOR_VMD_REQUEST_H
#define MOOR_VMD_REQUEST_H

#include <stdbool.h>

#include <moor/error.h>

#include "domain.h"
#include "image.h"
#include "pool.h"
#include "qmp.h"
#include "vmd.h"

struct json_object;
struct vmd_response;

/* The longest shutdown wait a caller may ask for: 5 minutes. The call holds a
 * worker (and its domain's job) that long, so the bound is kept short. */
#define VMD_SHUTDOWN_MAX_MS 300000u

struct vmd_request;

/* A body parser: @body is the request's JSON object, or NULL when there was
 * none. Fills @req->u. Returns 0 or -EINVAL (naming the field) / -ENOMEM. */
typedef int (*vmd_parse_fn)(struct json_object *body, struct vmd_request *req, moor_error *err);

/* A runner: the one op, on a worker. *@out as domain.h's ops. */
typedef int (*vmd_run_fn)(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                          moor_error *err);

struct vmd_request {
    /* From the route (api.c's table). */
    const char *api;    /* "start", for log lines */
    vmd_parse_fn parse; /* the body's parser */
    vmd_run_fn run;     /* NULL: the event stream */
    int cls;            /* enum vmd_work_class */
    unsigned ok_status; /* 200, or 201 for define */
    vmd_domain *dom;    /* owned reference; domain routes only */
    vmd_image *img;     /* owned reference; /v1/images/{name} routes only */
    union {
        struct vmd_domain_config define;
        bool paused;         /* start */
        unsigned timeout_ms; /* shutdown; 0: the daemon's default */
        struct {
            char execute[VMD_QMP_COMMAND_MAX + 1];
            struct json_object *arguments; /* owned; NULL if absent */
        } qmp;
        struct vmd_longjob_args longjob; /* save, restore, backup */
        struct vmd_image_create image_create;
        uint64_t size_mib; /* image resize */
    } u;
    struct vmd_client client; /* the HTTP peer (http.c sets it; unknown in tests) */
    /* Set by vmd_api_submit. */
    struct vmd *vmd;
    struct vmd_work work;
    void (*done)(void *opaque, struct vmd_response *resp);
    void *opaque;
};

/*
 * vmd_check_fields - -EINVAL naming the first field of @body not in the
 * NULL-terminated @known (req-domains.c; shared by the resources' parsers).
 */
int vmd_check_fields(struct json_object *body, const char *const *known, moor_error *err);

/*
 * vmd_token_valid - whether @s (@len bytes, not NUL-terminated) is 1..@max
 * of ASCII letters, digits and the characters of @punct: the one check of
 * ids ("._-", VMD_NAME_MAX) and QMP command names ("_-"). (api.c)
 */
bool vmd_token_valid(const char *s, size_t len, size_t max, const char *punct);

/*
 * The routes' two halves (api.c's table names one of each per route).
 *
 * vmd_parse_* - check the request's JSON @body (NULL when there was none;
 * borrowed: a parser takes its own reference to what it keeps) and fill
 * in @req's union. Called by vmd_api_parse on the loop thread, with no
 * lock held; never blocks (no lock, no I/O, no job). The caller owns @req
 * throughout. Returns 0, or -EINVAL (a missing or malformed field, an
 * unknown one) / -ENOMEM with @err set; on failure nothing in @req needs
 * clearing.
 *
 * vmd_request_clear_domains - release what a vmd_parse_* put in @req's
 * union (a define's config, a qmp's arguments); @req itself stays the
 * caller's. Any thread, no lock; never blocks.
 *
 * vmd_run_* - do the request: call the one operation of domain.h (or read
 * the daemon's figures) it stands for. Called by vmd_api_run on a pool
 * worker with no lock held; blocks at most as long as that operation does
 * (its job wait, --job-timeout, and its QMP call or disk writes, see
 * domain.h). @req stays the caller's (vmd_api_run frees it afterwards).
 * Returns 0 with *@out a new JSON object, the answer's body, which the
 * caller then owns; or a negative errno of domain.h's table (-ENOENT,
 * -EBUSY, -EINVAL, -ENOMEM, ...) with @err set and *@out untouched.
 */

/* req-domains.c: /v1/domains and /v1/domains/{id}[/action]. */
int vmd_parse_empty(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_parse_define(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_parse_start(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_parse_shutdown(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_parse_qmp(struct json_object *body, struct vmd_request *req, moor_error *err);
void vmd_request_clear_domains(struct vmd_request *req);
int vmd_run_list(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                 moor_error *err);
int vmd_run_define(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                   moor_error *err);
int vmd_run_info(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                 moor_error *err);
int vmd_run_undefine(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                     moor_error *err);
int vmd_run_state(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err);
int vmd_run_stats(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err);
int vmd_run_start(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err);
int vmd_run_shutdown(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                     moor_error *err);
int vmd_run_destroy(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err);
int vmd_run_suspend(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err);
int vmd_run_resume(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                   moor_error *err);
int vmd_run_reset(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err);
int vmd_run_qmp(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                moor_error *err);

/* req-jobs.c: the long jobs (save, restore, job info, abort). */
int vmd_parse_save(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_parse_restore(struct json_object *body, struct vmd_request *req, moor_error *err);
/* vmd_image_name_field - the image name at @key of @body into @out
 * (VMD_NAME_MAX + 1 bytes): 0, 1 when absent, -EINVAL (req-images.c). */
int vmd_image_name_field(struct json_object *body, const char *key, char *out, moor_error *err);
int vmd_parse_backup(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_run_backup(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                   moor_error *err);
int vmd_run_save(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                 moor_error *err);
int vmd_run_restore(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err);
int vmd_run_job(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                moor_error *err);
int vmd_run_abort(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err);
/* req-images.c: /v1/images and /v1/images/{name}[/resize]. */
int vmd_parse_image_create(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_parse_image_resize(struct json_object *body, struct vmd_request *req, moor_error *err);
int vmd_run_image_list(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                       moor_error *err);
int vmd_run_image_create(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                         moor_error *err);
int vmd_run_image_info(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                       moor_error *err);
int vmd_run_image_delete(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                         moor_error *err);
int vmd_run_image_resize(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                         moor_error *err);

/* req-misc.c: /v1/version and /v1/debug (/v1/events is http.c's stream). */
int vmd_run_version(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                    moor_error *err);
int vmd_run_debug(struct vmd *vmd, struct vmd_request *req, struct json_object **out,
                  moor_error *err);

#endif /* MOOR_VMD_REQUEST_H */
