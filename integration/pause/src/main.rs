//! nodelet-pause: the process that holds a pod sandbox's namespaces open.
//!
//! It blocks SIGTERM, SIGINT and SIGCHLD, then waits for them with sigwait:
//! SIGTERM or SIGINT ends it with status 0; SIGCHLD makes it reap every
//! zombie child (as PID 1 of a shared PID namespace it inherits orphans).
//! It is built as a fully static binary so the pause image holds one file.

use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Reaps every child that has exited, without blocking.
fn reap_zombies() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            // Children exist but none has exited yet.
            Ok(WaitStatus::StillAlive) => return,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            // ECHILD: no children left.
            Err(_) => return,
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("-v") {
        println!("nodelet-pause {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }

    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        // An inherited SIG_IGN would discard the signal before sigwait sees it.
        // SAFETY: SIG_DFL installs no handler code; nothing else runs yet.
        if let Err(e) = unsafe { signal(sig, SigHandler::SigDfl) } {
            eprintln!("nodelet-pause: reset {sig}: {e}");
            return ExitCode::FAILURE;
        }
        set.add(sig);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("nodelet-pause: sigprocmask: {e}");
        return ExitCode::FAILURE;
    }

    // Children may have exited before the mask was set.
    reap_zombies();

    loop {
        match set.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return ExitCode::SUCCESS,
            Ok(Signal::SIGCHLD) => reap_zombies(),
            Ok(_) => {}
            Err(e) => {
                eprintln!("nodelet-pause: sigwait: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}
