//! Child processes that are stopped (SIGTERM, then SIGKILL) when their guard drops.
use std::{
    process::{Child, ExitStatus},
    time::Duration,
};

use crate::wait::wait_until;

/// A child process owned by a test or the demo.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(name: &str, child: Child) -> Self {
        Self {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (and how).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` and waits up to `deadline` for the exit status.
    pub fn signal_and_wait(&mut self, signal: i32, deadline: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, signal) };
        }
        let status = wait_until(deadline, || child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // Politely first, so daemons detach XDP and drain; then by force.
        if self
            .signal_and_wait(libc::SIGTERM, Duration::from_secs(5))
            .is_some()
        {
            return;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
