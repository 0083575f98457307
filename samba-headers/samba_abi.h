/*
 * The part of Samba's smbd ABI this module touches, and nothing more.
 *
 * samba-dev ships neither source3/include/vfs.h nor smbd's structs, so the module keeps
 * this minimal view, checked against Samba 4.17.12 (VFS interface 47) and valid for
 * interfaces 47-53 (Samba 4.17-4.25; tests/abi_layout.rs and tests/abi_binaries.rs check
 * it against the real headers and binaries). Opaque structs stay opaque: the module reaches into
 * them only through functions smbd exports (fsp_get_io_fd, ...), because struct layouts
 * drift between releases.
 *
 * Samba's functions are not linked: each is resolved with dlsym() when smbd loads the
 * module, through the *_fn pointer types below, so one build is not tied to one release's
 * versioned symbols.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <talloc.h>
#include <tevent.h>

/* NTSTATUS is a uint32_t (or a struct wrapping one in developer builds: same ABI). */
typedef uint32_t NTSTATUS;

struct connection_struct;
struct files_struct;

/* source3/include/vfs.h, identical in interfaces 47-53. */
struct vfs_handle_struct {
	struct vfs_handle_struct *next, *prev;
	const char *param;
	struct connection_struct *conn;
	const void *fns;
	void *data;
	void (*free_data)(void **data);
};

/* source3/include/vfs.h: result side-band of every async VFS call. */
struct vfs_aio_state {
	int error;
	uint64_t duration; /* nanoseconds */
};

/* The VFS slots the module fills (same signatures in interfaces 47-53). */
typedef int (*aio_fork_connect_fn)(struct vfs_handle_struct *handle, const char *service,
				   const char *user);
typedef void (*aio_fork_disconnect_fn)(struct vfs_handle_struct *handle);
typedef struct tevent_req *(*aio_fork_pread_send_fn)(struct vfs_handle_struct *handle,
						     TALLOC_CTX *mem_ctx,
						     struct tevent_context *ev,
						     struct files_struct *fsp, void *data,
						     size_t n, off_t offset);
typedef ssize_t (*aio_fork_pread_recv_fn)(struct tevent_req *req, struct vfs_aio_state *state);
typedef struct tevent_req *(*aio_fork_pwrite_send_fn)(struct vfs_handle_struct *handle,
						      TALLOC_CTX *mem_ctx,
						      struct tevent_context *ev,
						      struct files_struct *fsp,
						      const void *data, size_t n,
						      off_t offset);
typedef ssize_t (*aio_fork_pwrite_recv_fn)(struct tevent_req *req, struct vfs_aio_state *state);
typedef struct tevent_req *(*aio_fork_fsync_send_fn)(struct vfs_handle_struct *handle,
						     TALLOC_CTX *mem_ctx,
						     struct tevent_context *ev,
						     struct files_struct *fsp);
typedef int (*aio_fork_fsync_recv_fn)(struct tevent_req *req, struct vfs_aio_state *state);

/*
 * Slots the module fills to keep smbd off a device known to hang (src/vfs/guarded.rs):
 * identical in interfaces 47-53. The next module's function of each is exported as
 * smb_vfs_call_<slot> with the same signature, so one type serves both.
 */
struct smb_filename;
struct smb_file_time;
struct vfs_open_how;
struct stat_ex;
struct __dirstream;
typedef int (*aio_fork_close_fn)(struct vfs_handle_struct *handle, struct files_struct *fsp);
typedef ssize_t (*aio_fork_pread_fn)(struct vfs_handle_struct *handle, struct files_struct *fsp,
				     void *data, size_t n, off_t offset);
typedef ssize_t (*aio_fork_pwrite_fn)(struct vfs_handle_struct *handle,
				      struct files_struct *fsp, const void *data, size_t n,
				      off_t offset);
typedef int (*aio_fork_fchmod_fn)(struct vfs_handle_struct *handle, struct files_struct *fsp,
				  mode_t mode);
typedef int (*aio_fork_fchown_fn)(struct vfs_handle_struct *handle, struct files_struct *fsp,
				  uid_t uid, gid_t gid);
typedef int (*aio_fork_fntimes_fn)(struct vfs_handle_struct *handle, struct files_struct *fsp,
				   struct smb_file_time *ft);
typedef int (*aio_fork_ftruncate_fn)(struct vfs_handle_struct *handle,
				     struct files_struct *fsp, off_t offset);
typedef int (*aio_fork_fallocate_fn)(struct vfs_handle_struct *handle,
				     struct files_struct *fsp, uint32_t mode, off_t offset,
				     off_t len);
typedef struct __dirstream *(*aio_fork_fdopendir_fn)(struct vfs_handle_struct *handle,
						     struct files_struct *fsp, const char *mask,
						     uint32_t attributes);
typedef NTSTATUS (*aio_fork_fget_dos_attributes_fn)(struct vfs_handle_struct *handle,
						    struct files_struct *fsp, uint32_t *dosmode);
typedef NTSTATUS (*aio_fork_fset_dos_attributes_fn)(struct vfs_handle_struct *handle,
						    struct files_struct *fsp, uint32_t dosmode);
typedef ssize_t (*aio_fork_fgetxattr_fn)(struct vfs_handle_struct *handle,
					 struct files_struct *fsp, const char *name, void *value,
					 size_t size);
typedef ssize_t (*aio_fork_flistxattr_fn)(struct vfs_handle_struct *handle,
					  struct files_struct *fsp, char *list, size_t size);
typedef int (*aio_fork_fremovexattr_fn)(struct vfs_handle_struct *handle,
					struct files_struct *fsp, const char *name);
typedef int (*aio_fork_fsetxattr_fn)(struct vfs_handle_struct *handle,
				     struct files_struct *fsp, const char *name,
				     const void *value, size_t size, int flags);
typedef int (*aio_fork_openat_fn)(struct vfs_handle_struct *handle,
				  const struct files_struct *dirfsp,
				  const struct smb_filename *smb_fname, struct files_struct *fsp,
				  const struct vfs_open_how *how);
typedef int (*aio_fork_mkdirat_fn)(struct vfs_handle_struct *handle,
				   struct files_struct *dirfsp,
				   const struct smb_filename *smb_fname, mode_t mode);
typedef int (*aio_fork_unlinkat_fn)(struct vfs_handle_struct *handle,
				    struct files_struct *dirfsp,
				    const struct smb_filename *smb_fname, int flags);
typedef int (*aio_fork_fstatat_fn)(struct vfs_handle_struct *handle,
				   const struct files_struct *dirfsp,
				   const struct smb_filename *smb_fname, struct stat_ex *sbuf,
				   int flags);
typedef int (*aio_fork_symlinkat_fn)(struct vfs_handle_struct *handle,
				     const struct smb_filename *link_contents,
				     struct files_struct *dirfsp,
				     const struct smb_filename *new_smb_fname);
typedef int (*aio_fork_linkat_fn)(struct vfs_handle_struct *handle, struct files_struct *srcfsp,
				  const struct smb_filename *old_smb_fname,
				  struct files_struct *dstfsp,
				  const struct smb_filename *new_smb_fname, int flags);
typedef int (*aio_fork_mknodat_fn)(struct vfs_handle_struct *handle,
				   struct files_struct *dirfsp,
				   const struct smb_filename *smb_fname, mode_t mode, dev_t dev);
typedef int (*aio_fork_stat_fn)(struct vfs_handle_struct *handle, struct smb_filename *smb_fname);
typedef int (*aio_fork_lstat_fn)(struct vfs_handle_struct *handle,
				 struct smb_filename *smb_fname);

#include "vfs_fn_pointers_v47.h"
#include "vfs_fn_pointers_v49.h"
#include "vfs_fn_pointers_v52.h"
#include "vfs_fn_pointers_v53.h"

/*
 * Functions smbd exports, resolved at load time. The library each comes from is noted;
 * names are the exported symbol names.
 */
/* libsmbd-base */
typedef NTSTATUS (*smb_register_vfs_fn)(int version, const char *name, const void *fns);
typedef int (*smb_vfs_call_connect_fn)(struct vfs_handle_struct *handle, const char *service,
				       const char *user);
typedef void (*smb_vfs_call_disconnect_fn)(struct vfs_handle_struct *handle);
typedef struct tevent_req *(*smb_vfs_call_pread_send_fn)(struct vfs_handle_struct *handle,
							 TALLOC_CTX *mem_ctx,
							 struct tevent_context *ev,
							 struct files_struct *fsp,
							 void *data, size_t n, off_t offset);
typedef struct tevent_req *(*smb_vfs_call_pwrite_send_fn)(struct vfs_handle_struct *handle,
							  TALLOC_CTX *mem_ctx,
							  struct tevent_context *ev,
							  struct files_struct *fsp,
							  const void *data, size_t n,
							  off_t offset);
typedef struct tevent_req *(*smb_vfs_call_fsync_send_fn)(struct vfs_handle_struct *handle,
							 TALLOC_CTX *mem_ctx,
							 struct tevent_context *ev,
							 struct files_struct *fsp);
/* The receive side of a request sent to the next module. Exported as SMB_VFS_PREAD_RECV,
 * SMB_VFS_PWRITE_RECV, SMB_VFS_FSYNC_RECV up to Samba 4.23; from 4.24 those names are
 * macros and the exported functions are smb_vfs_call_pread_recv, _pwrite_recv,
 * _fsync_recv, with the same signatures. */
typedef ssize_t (*smb_vfs_rw_recv_fn)(struct tevent_req *req, struct vfs_aio_state *state);
typedef int (*smb_vfs_fsync_recv_fn)(struct tevent_req *req, struct vfs_aio_state *state);
typedef int (*fsp_get_io_fd_fn)(const struct files_struct *fsp);
typedef int (*fsp_get_pathref_fd_fn)(const struct files_struct *fsp);
typedef const char *(*fsp_str_dbg_fn)(const struct files_struct *fsp);

/* libsmbconf */
typedef const char *(*lp_parm_const_string_fn)(int snum, const char *type, const char *option,
					       const char *def);
typedef int (*lp_servicenumber_fn)(const char *service_name);
typedef struct tevent_context *(*global_event_context_fn)(void);
typedef const char *(*samba_version_string_fn)(void);

/* libsamba-debug */
typedef int (*debug_add_class_fn)(const char *classname);
typedef int (*debuglevel_get_class_fn)(size_t idx);
typedef bool (*dbghdrclass_fn)(int level, int cls, const char *location, const char *func);
typedef bool (*dbgtext_fn)(const char *format, ...);
