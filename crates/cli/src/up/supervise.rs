//! The processes of a `trellis up` mesh, kept running the way a real deployment keeps its
//! workloads running: a process that dies once the mesh is up is started again, with
//! back-off, while everything else keeps serving (proxies on their last snapshot while the
//! control plane is away, the other instances of a service while one is down). Only Ctrl-C
//! (or SIGTERM) stops the whole mesh.
//!
//! During start-up a death is still fatal: a process that cannot come up the first time
//! (a port in use, a bad flag) would only die again, and the user needs to hear why.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::local_mesh::{self, MeshRecord, ProcessRecord};

/// Builds the command that (re)starts a process: called again for every restart, so that
/// what must be fresh (a join token) is.
pub(super) type MakeCommand = Box<dyn FnMut() -> anyhow::Result<Command> + Send>;

/// The first wait before a restart; doubled after each death that follows a short run.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between restarts of a process that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before dying is restarted after [`FIRST_BACKOFF`] again:
/// it was not crash-looping.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How often the supervisor looks at its processes.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// One supervised process.
struct Supervised {
    label: String,
    make: MakeCommand,
    /// `None` while it waits to be restarted.
    child: Option<Child>,
    started: Instant,
    restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
}

/// The processes of the mesh, restarted when they die and stopped together.
#[derive(Default)]
pub(super) struct Children {
    procs: Vec<Supervised>,
    /// What `up` publishes for the admin commands; refreshed with the PIDs on every
    /// (re)start once set.
    record: Option<MeshRecord>,
}

impl Children {
    /// Starts a process, and remembers how to start it again.
    pub(super) fn spawn(&mut self, label: String, mut make: MakeCommand) -> anyhow::Result<()> {
        let child = start(&label, &mut make)?;
        self.procs.push(Supervised {
            label,
            make,
            child: Some(child),
            started: Instant::now(),
            restarts: 0,
            backoff: FIRST_BACKOFF,
            restart_at: None,
        });
        self.publish();
        Ok(())
    }

    /// The first process that has exited, if any: what start-up checks.
    pub(super) fn exited(&mut self) -> Option<(String, ExitStatus)> {
        self.procs.iter_mut().find_map(|p| {
            let status = p.child.as_mut()?.try_wait().ok()??;
            Some((p.label.clone(), status))
        })
    }

    /// Publishes `record` (with the PIDs filled in) for the admin commands to find, unless
    /// another live `up` published first. Returns whether this mesh's record is the one.
    pub(super) fn publish_record(&mut self, record: MeshRecord) -> anyhow::Result<bool> {
        self.record = Some(record);
        self.publish_now()
    }

    fn publish(&mut self) {
        if let Err(e) = self.publish_now() {
            eprintln!("trellis up: could not update the mesh record: {e:#}");
        }
    }

    fn publish_now(&mut self) -> anyhow::Result<bool> {
        let Some(record) = &mut self.record else {
            return Ok(false);
        };
        record.processes = self
            .procs
            .iter()
            .filter_map(|p| {
                Some(ProcessRecord {
                    label: p.label.clone(),
                    pid: p.child.as_ref()?.id()?,
                    restarts: p.restarts,
                })
            })
            .collect();
        let published = local_mesh::write(record)?;
        if !published {
            // Another mesh holds the record; stop trying.
            self.record = None;
        }
        Ok(published)
    }

    /// One round of supervision: notes deaths (and says so), and restarts what is due.
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        let mut changed = false;
        for p in &mut self.procs {
            if let Some(child) = &mut p.child {
                let status = match child.try_wait() {
                    Ok(Some(status)) => status,
                    Ok(None) => continue,
                    Err(e) => {
                        eprintln!("trellis up: cannot check on {}: {e}", p.label);
                        continue;
                    }
                };
                if now.duration_since(p.started) >= HEALTHY_RUN {
                    p.backoff = FIRST_BACKOFF;
                }
                eprintln!(
                    "trellis up: {} exited unexpectedly ({status}); restarting it in {:?}, \
                     the rest of the mesh keeps serving",
                    p.label, p.backoff
                );
                p.child = None;
                p.restart_at = Some(now + p.backoff);
                p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
                changed = true;
            }
            if p.restart_at.is_some_and(|at| at <= now) {
                p.restart_at = None;
                match start(&p.label, &mut p.make) {
                    Ok(child) => {
                        p.restarts += 1;
                        p.started = now;
                        eprintln!(
                            "trellis up: {} restarted (pid {}, restart {})",
                            p.label,
                            child.id().unwrap_or(0),
                            p.restarts
                        );
                        p.child = Some(child);
                    }
                    Err(e) => {
                        eprintln!(
                            "trellis up: could not restart {}: {e:#}; trying again in {:?}",
                            p.label, p.backoff
                        );
                        p.restart_at = Some(now + p.backoff);
                        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
                    }
                }
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Supervises until cancelled (the caller selects this against Ctrl-C).
    pub(super) async fn supervise(&mut self) -> ! {
        loop {
            self.tick();
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM to all, then SIGKILL to whatever still runs after the grace period; removes
    /// the mesh record.
    pub(super) async fn stop(&mut self) {
        for p in &mut self.procs {
            p.restart_at = None;
            if let Some(pid) = p.child.as_ref().and_then(Child::id) {
                // SAFETY: kill(2) on a PID of our own child, which we have not reaped yet,
                // so the PID cannot have been reused.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &mut self.procs {
            let Some(c) = &mut p.child else { continue };
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, c.wait()).await.is_err() {
                eprintln!("trellis up: {} did not stop in time; killing it", p.label);
                let _ = c.kill().await;
            }
        }
        if self.record.take().is_some() {
            local_mesh::remove(std::process::id());
        }
    }
}

/// Starts one process: stdin closed, killed with `up` however `up` ends.
fn start(label: &str, make: &mut MakeCommand) -> anyhow::Result<Child> {
    let mut cmd = make().with_context(|| format!("preparing {label}"))?;
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
    // parent; it makes the kernel kill the child if `up` dies without cleaning up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting {label}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &'static str) -> MakeCommand {
        Box::new(move || {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            Ok(c)
        })
    }

    /// A process that dies is started again after the back-off, and one that keeps dying
    /// waits longer each time; the others are left alone.
    #[tokio::test]
    async fn a_dead_process_is_restarted_with_back_off() {
        let mut children = Children::default();
        children.spawn("dies".into(), sh("exit 3")).expect("spawn");
        children
            .spawn("lives".into(), sh("exec sleep 30"))
            .expect("spawn");
        let lives_pid = children.procs[1].child.as_ref().and_then(Child::id);

        let deadline = Instant::now() + Duration::from_secs(20);
        while children.procs[0].restarts < 3 && Instant::now() < deadline {
            children.tick();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dies = &children.procs[0];
        assert!(dies.restarts >= 3, "restarted {} times", dies.restarts);
        // 0.5 s, 1 s, 2 s: the wait doubles after each short run.
        assert!(
            dies.backoff >= FIRST_BACKOFF * 8,
            "back-off {:?}",
            dies.backoff
        );
        let lives = &children.procs[1];
        assert_eq!(lives.restarts, 0);
        assert_eq!(lives.child.as_ref().and_then(Child::id), lives_pid);
        children.stop().await;
    }

    /// Start-up treats a death as fatal and names the process.
    #[tokio::test]
    async fn start_up_sees_which_process_exited() {
        let mut children = Children::default();
        children.spawn("quick".into(), sh("exit 7")).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let exited = loop {
            if let Some(e) = children.exited() {
                break e;
            }
            assert!(Instant::now() < deadline, "the process did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(exited.0, "quick");
        assert_eq!(exited.1.code(), Some(7));
        children.stop().await;
    }
}
