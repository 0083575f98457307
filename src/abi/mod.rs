//! The edge to smbd's C: bindgen types and the C shim, the smbd functions resolved at load
//! time, the module's own file, the panic boundary, the bridge
//! from `tracing` into Samba's debug log, and Samba's profile counters (`profile`, placed
//! by `profile_layout`). Every `unsafe` call into Samba goes through here.

pub mod ffi;
pub mod guard;
pub mod logging;
pub mod module_file;
pub mod profile;
pub mod profile_layout;
pub mod samba;
pub mod sha1;
