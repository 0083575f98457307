//! Build: bindgen over `samba-headers/` (plus the public talloc/tevent headers), and `cc`
//! for the few talloc/tevent calls that exist only as C macros (`src/c/shim.c`).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=samba-headers");
    println!("cargo:rerun-if-changed=src/c/shim.c");

    cc::Build::new()
        .file("src/c/shim.c")
        .warnings(true)
        .extra_warnings(true)
        .compile("aio_fork_shim");

    // talloc and tevent are public libraries with a stable ABI; smbd links the same ones.
    println!("cargo:rustc-link-lib=dylib=talloc");
    println!("cargo:rustc-link-lib=dylib=tevent");

    let bindings = bindgen::Builder::default()
        .header("samba-headers/samba_abi.h")
        .clang_arg("-Isamba-headers")
        .allowlist_type("vfs_handle_struct|vfs_aio_state|vfs_fn_pointers_v.*|NTSTATUS")
        .allowlist_type(".*_fn")
        .allowlist_function("tevent_req_(post|set_callback|is_error|received|is_in_progress)")
        .allowlist_function("_talloc_free|talloc_named_const|tevent_context_init|_tevent_loop_once")
        .allowlist_type("tevent_req_state|tevent_fd_handler_t|tevent_timer_handler_t")
        .allowlist_var("TEVENT_FD_READ")
        .default_enum_style(bindgen::EnumVariation::Rust {
            non_exhaustive: false,
        })
        .layout_tests(true)
        .generate()
        .expect("bindgen over samba-headers/samba_abi.h failed (is libclang-dev installed?)");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("samba_abi.rs");
    bindings
        .write_to_file(out)
        .expect("writing the generated bindings failed");
}
