//! smbd's side of the module's processes: starting a zygote as the user of a request,
//! asking it for helpers and checking what it hands over, talking to helpers, ending and
//! reaping them, and the bound on how many processes one smbd process may have.

pub mod credentials;
pub mod handover;
pub mod helper;
pub mod proc_state;
pub mod processes;
pub mod reap;
pub mod zygote;
