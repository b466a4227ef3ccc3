/* SPDX-License-Identifier: MIT */
/*
 * image.h - the image pool: disk images in <state_dir>/images, each a
 * lockable moor object in vmd->images, and the operations the API calls
 * on them. qemu-img does the file work (create, resize, info), run with
 * an argv and never a shell.
 *
 * Lifetime and busy are kept apart (seed 003; docs/vmd.md, "Images"):
 *   - references keep an image object alive: the registry's, each domain
 *     config that names it as a disk (held by the domain), each overlay's
 *     on its backing image, and each API call in flight;
 *   - blockers say what may not be done to it now and why: a domain that
 *     uses it blocks delete ("image base.qcow2 is used by domain web1"),
 *     and, when it writes to it, its use as an overlay's backing file,
 *     an overlay blocks resize, delete and writable use of its backing
 *     ("image base.qcow2 is the backing file of overlay web1.qcow2"), a
 *     create, resize or delete in progress blocks everything else, and a
 *     backup job may block resize and delete with its own reason through
 *     vmd_image_block().
 *
 * Lock order: an image's mutex and a domain's mutex are never held at
 * once (DESIGN rule 4). Define and undefine attach and detach disks with
 * no domain mutex held; a resize that must go through a running domain
 * places its block on the image, drops the image mutex, and only then
 * takes the domain's job (vmd_domain_disk_resize). Blocker sets have
 * their own leaf mutexes, taken under either.
 *
 * Errors follow domain.h's table: -EINVAL 400 (bad name, size, field),
 * -ENOENT 404 (no such image), -EEXIST 409 (name taken), -EBUSY 409 (a
 * block or a user refuses the operation, naming it), -EIO 500 (qemu-img
 * failed: its message), -ETIMEDOUT 504 (qemu-img did not finish).
 */
#ifndef MOOR_VMD_IMAGE_H
#define MOOR_VMD_IMAGE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include <moor/blocker.h>
#include <moor/error.h>

#include "domain.h"
#include "vmd.h"

struct json_object;

#define VMD_IMAGE_SIZE_MIB_MAX 1048576u /* 1 TiB: the largest create or resize */
#define VMD_IMAGE_NODE_MAX     31       /* QEMU's node-name limit, without the NUL */
#define VMD_IMAGE_TOOL_MS      60000u   /* how long one qemu-img run may take */

/* An image: a lockable moor object in vmd->images. Opaque outside image.c. */
typedef struct vmd_image vmd_image;

enum vmd_image_format { VMD_IMAGE_QCOW2 = 0, VMD_IMAGE_RAW };

/* What a block on an image may cover (MOOR_BLOCKER_OP(op) masks). */
enum vmd_image_op {
    VMD_IMAGE_OP_RESIZE = 0,
    VMD_IMAGE_OP_DELETE,
    VMD_IMAGE_OP_USE,     /* become a domain's disk or an overlay's backing */
    VMD_IMAGE_OP_WRITE,   /* be a domain's writable disk */
    VMD_IMAGE_OP_BACKING, /* become an overlay's backing file */
    VMD_IMAGE_OP__COUNT
};

/* A validated create request (POST /v1/images). */
struct vmd_image_create {
    char name[VMD_NAME_MAX + 1];
    enum vmd_image_format format;   /* qcow2 for an overlay */
    uint64_t size_mib;              /* 1..VMD_IMAGE_SIZE_MIB_MAX; 0: an overlay's backing size */
    char backing[VMD_NAME_MAX + 1]; /* "" or the backing image (an overlay) */
    uint64_t size_bytes;            /* non-zero: the size in bytes (a backup's target) */
};

/* ---- the pool ------------------------------------------------------------- */

/*
 * vmd_images_load - at start-up, before vmd_domains_load: create the pool
 * directory, read every image in it (qemu-img info: format, size, backing
 * file) into vmd->images, then link each overlay to its backing image.
 * A file qemu-img cannot read is logged and left out; an overlay whose
 * backing file is not in the pool is loaded without a backing link.
 * Blocks: one qemu-img run per file. Returns 0, or a negative errno when
 * the directory cannot be made or read.
 */
int vmd_images_load(struct vmd *vmd, moor_error *err);

/* vmd_images_shutdown - at daemon exit, after the domains are gone: drop
 * every image from the registry (files stay). */
void vmd_images_shutdown(struct vmd *vmd);

/* vmd_image_lookup - an image by name. Lock-free. New reference or NULL. */
vmd_image *vmd_image_lookup(struct vmd *vmd, const char *name);

/* vmd_image_name / vmd_image_uuid - stable for a reference (an image is
 * never renamed; the uuid is made at load or create, for the pool's lanes). */
const char *vmd_image_name(vmd_image *img);
const moor_uuid *vmd_image_uuid(vmd_image *img);

/* vmd_image_path - <state_dir>/images/<name> into @out. -ENAMETOOLONG. */
int vmd_image_path(const struct vmd_options *opt, const char *name, char out[PATH_MAX]);

/* vmd_image_node_name - the QEMU node name of disk @index of a domain,
 * from the image name: "d<index>-" and the name's characters that QEMU
 * allows, cut to VMD_IMAGE_NODE_MAX. Unique within a domain (the index). */
void vmd_image_node_name(unsigned index, const char *image, char out[VMD_IMAGE_NODE_MAX + 1]);

/*
 * vmd_image_block - place a block on @img's operations @ops for the reason
 * formatted from @fmt (a backup job: "backup job of domain web1"; the
 * refusal adds its age). Fails with -EBUSY when @img is being deleted or
 * was. Ownership: the caller owns the block (moor_unblock(@tok)) and
 * should own a reference to @img until then. Locks: @img's mutex,
 * briefly; no domain mutex may be held. Returns 0, -EBUSY, -ENOENT
 * (deleted), or moor_block's codes.
 */
int vmd_image_block(vmd_image *img, uint64_t ops, moor_block_token *tok, moor_error *err,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- operations (one per route) ------------------------------------------ */

/* GET /v1/images: {"images": [<view>...]} sorted by name. Mutexes only. */
int vmd_image_list(struct vmd *vmd, struct json_object **out, moor_error *err);

/* POST /v1/images: 201 with the view. -EEXIST (name taken, or a stray file
 * of that name in the pool), -ENOENT (no such backing), -EBUSY (the
 * backing is being deleted), -EIO (qemu-img). Blocks: qemu-img create. */
int vmd_image_create(struct vmd *vmd, const struct vmd_image_create *req, struct json_object **out,
                     moor_error *err);

/*
 * vmd_image_create_held - vmd_image_create, and when @hold is not NULL a
 * block on every operation with the reason @hold placed before the "being
 * created" block goes (no moment where the new image is free), its token
 * into *@held (the caller's: moor_unblock or vmd_image_delete_held).
 */
int vmd_image_create_held(struct vmd *vmd, const struct vmd_image_create *req, const char *hold,
                          moor_block_token *held, struct json_object **out, moor_error *err);

/* vmd_image_size - the virtual size in bytes. Locks: @img's mutex, briefly. */
uint64_t vmd_image_size(vmd_image *img);

/* GET /v1/images/{name}: the view plus what qemu-img info says now. */
int vmd_image_info(struct vmd *vmd, vmd_image *img, struct json_object **out, moor_error *err);

/* DELETE /v1/images/{name}: -EBUSY naming the user, overlay or job that
 * blocks it. Removes the file, then the object from the registry. */
int vmd_image_delete(struct vmd *vmd, vmd_image *img, struct json_object **out, moor_error *err);

/* vmd_image_delete_held - delete, dropping the caller's block *@held
 * (NULL: none) under the same mutex hold as the delete's own block is
 * placed: nobody can start using the image in between. *@held is cleared
 * even when the delete is refused. */
int vmd_image_delete_held(struct vmd *vmd, vmd_image *img, moor_block_token *held,
                          struct json_object **out, moor_error *err);

/* POST /v1/images/{name}/resize {"size_mib"}: grow only (-EINVAL to
 * shrink). Through its domain's QMP block_resize (MODIFY job) when a
 * running domain uses it, qemu-img resize otherwise. -EBUSY when blocked
 * or used by more than one domain. */
int vmd_image_resize(struct vmd *vmd, vmd_image *img, uint64_t size_mib, struct json_object **out,
                     moor_error *err);

/* ---- a domain's disks (for domain.c) ---------------------------------------- */

/* The images a domain config names: a reference and a block per disk. */
struct vmd_disk_refs;

/*
 * vmd_disks_attach - for each disk of @cfg: find its image (-ENOENT
 * "disks[1]: no image base.qcow2"), refuse one that cannot be used now
 * (-EBUSY, the reason), take a reference, block its deletion with "image
 * X is used by domain D" and record D as a user. All or nothing.
 * @loading (start-up): a missing image is logged and skipped instead.
 * Ownership: *@out is the caller's (vmd_disks_detach); NULL when @cfg has
 * no disks. Locks: each image's mutex in turn; no domain mutex may be held.
 */
int vmd_disks_attach(struct vmd *vmd, const struct vmd_domain_config *cfg, bool loading,
                     struct vmd_disk_refs **out, moor_error *err);

/* vmd_disks_detach - drop the blocks, the user records and the references;
 * NULLs *@refs. NULL-safe. Locks: as attach (no domain mutex held). */
void vmd_disks_detach(struct vmd_disk_refs **refs);

/* vmd_disks_check - at start: -ENOENT naming a disk whose image was
 * missing at load (start reports it as 400, like a missing emulator).
 * No lock needed (the refs are immutable). */
int vmd_disks_check(const struct vmd_disk_refs *refs, const struct vmd_domain_config *cfg,
                    moor_error *err);

/*
 * vmd_disk_args - QEMU's -blockdev value (JSON: the image's format driver
 * over a file node, read-only if asked) and -device value (virtio-blk-pci
 * or ide-hd on that node, id "disk<i>") for disk @i of @cfg. Reads only
 * what never changes after create (the format). Ownership: both strings
 * are the caller's (free). Returns 0, -ENOMEM, -ENAMETOOLONG, -ENOENT (the
 * image was missing at load).
 */
int vmd_disk_args(const struct vmd_disk_refs *refs, const struct vmd_domain_config *cfg, unsigned i,
                  const struct vmd_options *opt, char **blockdev, char **device);

/* ---- in domain.c ------------------------------------------------------------ */

/*
 * vmd_domain_disk_resize - resize the disk of @dom that uses @image to
 * @bytes, under a MODIFY job of @dom: QMP block_resize when QEMU runs;
 * @offline(@opaque) (qemu-img) when shut off, with the job still held so
 * the domain cannot start meanwhile. -ENOENT when @dom was undefined (the
 * caller then resizes offline). No image mutex may be held.
 */
int vmd_domain_disk_resize(struct vmd *vmd, vmd_domain *dom, const char *image, uint64_t bytes,
                           int (*offline)(void *opaque, moor_error *err), void *opaque,
                           moor_error *err);

#endif /* MOOR_VMD_IMAGE_H */
