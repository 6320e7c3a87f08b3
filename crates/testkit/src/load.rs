//! Paced load for end-to-end tests: a steady request rate until told to stop, every failure
//! kept with its reason.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::HttpClient;

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    /// One line per failed request: status and body, or the transport error.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl LoadReport {
    /// Requests per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A load running in the background.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

impl Load {
    /// Starts sending GET `path` with `Host: host` to `addr` at `rate` requests per second,
    /// at most `max_in_flight` at once (a request that would exceed it counts as failed:
    /// the target is not keeping up).
    pub fn start(
        addr: SocketAddr,
        host: &str,
        path: &str,
        rate: u32,
        max_in_flight: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (host, path) = (host.to_string(), path.to_string());
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = HttpClient::new();
            let report = Arc::new(Mutex::new(LoadReport::default()));
            let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                    r.sent += 1;
                    r.failures
                        .push(format!("more than {max_in_flight} requests in flight"));
                    continue;
                };
                let (client, host, path, report) =
                    (client.clone(), host.clone(), path.clone(), report.clone());
                tasks.spawn(async move {
                    let result = client.get(addr, &host, &path, &[]).await;
                    drop(permit);
                    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                    r.sent += 1;
                    match result {
                        Ok(resp) if resp.status == 200 => r.ok += 1,
                        Ok(resp) => r.failures.push(format!("{}: {}", resp.status, resp.text())),
                        Err(e) => r.failures.push(format!("{e:#}")),
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            let mut r = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
            r.elapsed = started.elapsed();
            r
        });
        Load { stop, task }
    }

    /// Stops sending, waits for requests in flight, and reports.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
