//! What the daemon observes of the kernel: interfaces (rtnetlink) and where CPU time goes
//! (/proc).

pub mod cpu;
pub mod links;
