#!/usr/bin/env python3
# Builds the Rust aio_fork module inside a Samba source tree, the way an out-of-tree VFS
# module is built there (next to bld.SAMBA3_MODULE('vfs_aio_fork', subsystem='vfs', ...)
# in source3/modules/wscript_build), except that the compiler is cargo.
#
# Use (Samba 4.17 and later; see README for the tested commands):
#   ln -s /path/to/this/checkout <samba-src>/source3/modules/aio_fork_rs
#   echo "bld.RECURSE('aio_fork_rs')" >> <samba-src>/source3/modules/wscript_build
#   cd <samba-src> && ./configure ... && make            # or: buildtools/bin/waf build --targets=vfs_aio_fork_rs
#   make install                                         # installs ${MODULESDIR}/vfs/aio_fork_rs.so
#
# The module file is named aio_fork_rs.so, not aio_fork.so: the same tree builds Samba's
# own C vfs_aio_fork into ${MODULESDIR}/vfs/aio_fork.so, and the Rust module registers
# under the base name of its file, so a share uses it with `vfs objects = aio_fork_rs`.
# It is always a shared module: a cdylib cannot be linked into smbd statically.
#
# Why a generator and not SAMBA3_MODULE itself: SAMBA3_MODULE compiles and links C
# sources with waf's C tool; this module is linked by rustc. SAMBA_GENERATOR is Samba's
# own wrapper for a task that runs a custom rule, so the target takes part in Samba's
# dependency checks and `--targets=` like any other.
#
# Environment: CARGO (default: `cargo` on PATH, else ~/.cargo/bin/cargo);
# AIO_FORK_RS_CARGO_TARGET_DIR (default: inside Samba's build directory, bin/).

import os
import shutil

MODULE = 'vfs_aio_fork_rs'
SO_NAME = 'aio_fork_rs.so'
# The helper program smbd starts as each request's user; the module finds it beside itself.
HELPER = 'aio_fork_helper'


def _cargo():
    cargo = os.environ.get('CARGO') or shutil.which('cargo')
    if not cargo:
        home_cargo = os.path.expanduser('~/.cargo/bin/cargo')
        if os.path.exists(home_cargo):
            cargo = home_cargo
    if not cargo:
        raise RuntimeError('%s: cargo not found: install a Rust toolchain (rustup) or set CARGO' % MODULE)
    return cargo


def build(bld):
    # Honour --with-static-modules / a disabled vfs subsystem like any Samba module would.
    if bld.SAMBA3_IS_STATIC_MODULE(MODULE):
        raise RuntimeError('%s can only be a shared module (it is a Rust cdylib); '
                           'remove it from --with-static-modules' % MODULE)
    from samba_utils import GET_TARGET_TYPE  # wafsamba, on sys.path inside a Samba build
    if GET_TARGET_TYPE(bld, 'vfs') == 'DISABLED':
        return

    manifest = bld.path.find_node('Cargo.toml')
    if manifest is None:
        raise RuntimeError('%s: no Cargo.toml in %s' % (MODULE, bld.path.abspath()))
    out = bld.path.find_or_declare(SO_NAME)
    helper = bld.path.find_or_declare(HELPER)
    target_dir = os.environ.get('AIO_FORK_RS_CARGO_TARGET_DIR') or \
        os.path.join(out.parent.abspath(), 'cargo-target')

    def cargo_build(task):
        # cargo tracks its own inputs (src/, build.rs, samba-headers/, Cargo.lock), so the
        # task runs on every build (always=True) and cargo decides whether to recompile.
        cmd = [_cargo(), 'build', '--release', '--locked',
               '--manifest-path', manifest.abspath(),
               '--target-dir', target_dir]
        # The tree's own source3/include/vfs.h and VERSION: build.rs generates the VFS
        # table of this very release from them, so the module loads into it even when
        # samba-headers/ does not know it yet (master, a newer release).
        env = dict(os.environ)
        env['AIO_FORK_SAMBA_SOURCE'] = bld.srcnode.abspath()
        ret = task.exec_command(cmd, env=env)
        if ret:
            return ret
        for built, dest in [('libaio_fork.so', task.outputs[0].abspath()),
                            (HELPER, task.outputs[1].abspath())]:
            tmp = dest + '.tmp'
            shutil.copyfile(os.path.join(target_dir, 'release', built), tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)  # atomic: a running smbd that maps the old file keeps it
        dest = task.outputs[0].abspath()
        # Where Samba's own modules appear for selftest (bin/modules/vfs/<name>.so), so a
        # selftest environment can load it by name as well.
        link_dir = os.path.join(bld.bldnode.abspath(), '..', 'modules', 'vfs')
        if os.path.isdir(os.path.join(bld.bldnode.abspath(), '..', 'modules')):
            os.makedirs(link_dir, exist_ok=True)
            for name, target in [(SO_NAME, dest), (HELPER, task.outputs[1].abspath())]:
                link = os.path.join(link_dir, name)
                if os.path.lexists(link):
                    os.unlink(link)
                os.symlink(target, link)
        return 0

    t = bld.SAMBA_GENERATOR(MODULE,
                            rule=cargo_build,
                            source='',
                            target=[out, helper],
                            always=True)
    if t is not None:
        # Installed by the generator's own task generator (waf's rule feature honours
        # install_path), so `waf install --targets=vfs_aio_fork_rs` installs it too.
        t.install_path = '${MODULESDIR}/vfs'
        t.chmod = 0o755
