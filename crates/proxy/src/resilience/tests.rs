use super::*;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 15008))
}

fn config(consecutive_5xx: u32) -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: Some(consecutive_5xx),
        consecutive_gateway_errors: None,
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 50,
        consecutive_local_origin: None,
    }
}

/// Failures to reach the endpoint count as gateway errors, or, split off, on their own: then
/// they neither feed nor reset the 5xx count, and an answer of any kind resets theirs.
#[test]
fn local_origin_failures_count_apart_when_split() {
    let t0 = Instant::now();
    let joined = OutlierDetector::new(config(2));
    assert!(!joined.record(addr(1), Answer::LocalOrigin, 4, t0));
    assert!(joined.record(addr(1), Answer::LocalOrigin, 4, t0));
    let split = OutlierDetector::new(OutlierConfig {
        consecutive_local_origin: Some(3),
        ..config(2)
    });
    let a = addr(1);
    assert!(!split.record(a, Answer::LocalOrigin, 4, t0));
    assert!(!split.record(a, Answer::LocalOrigin, 4, t0));
    assert!(
        !split.record(a, Answer::ServerError, 4, t0),
        "resets the local count"
    );
    assert!(!split.record(a, Answer::LocalOrigin, 4, t0));
    assert!(!split.record(a, Answer::LocalOrigin, 4, t0));
    assert!(
        split.record(a, Answer::LocalOrigin, 4, t0),
        "third in a row"
    );
    // The 5xx count was not fed by the local failures: one 500 more does not eject b.
    let b = addr(2);
    assert!(!split.record(b, Answer::ServerError, 4, t0));
    assert!(!split.record(b, Answer::LocalOrigin, 4, t0));
    assert!(
        split.record(b, Answer::ServerError, 4, t0),
        "two 5xx in a row"
    );
}

/// Consecutive 5xx eject; a success in between resets the count; the endpoint comes back
/// when its time is up, and a second ejection lasts twice as long.
#[test]
fn consecutive_errors_eject_and_time_restores() {
    let d = OutlierDetector::new(config(3));
    let t0 = Instant::now();
    let a = addr(1);
    assert!(!d.record(a, Answer::ServerError, 4, t0));
    assert!(!d.record(a, Answer::ServerError, 4, t0));
    assert!(!d.record(a, Answer::Success, 4, t0));
    assert!(!d.record(a, Answer::ServerError, 4, t0));
    assert!(!d.record(a, Answer::GatewayError, 4, t0));
    assert!(
        d.record(a, Answer::ServerError, 4, t0),
        "third in a row ejects"
    );
    assert!(d.is_ejected(a, t0 + Duration::from_secs(29)));
    assert!(!d.is_ejected(a, t0 + Duration::from_secs(30)));
    let t1 = t0 + Duration::from_secs(31);
    for _ in 0..3 {
        d.record(a, Answer::ServerError, 4, t1);
    }
    assert!(d.is_ejected(a, t1 + Duration::from_secs(59)));
    assert!(!d.is_ejected(a, t1 + Duration::from_secs(60)));
    assert!(!d.is_ejected(addr(2), t1));
}

/// Gateway errors have their own count, and 500s do not feed it.
#[test]
fn gateway_errors_count_apart() {
    let d = OutlierDetector::new(OutlierConfig {
        consecutive_5xx: None,
        consecutive_gateway_errors: Some(2),
        ..config(0)
    });
    let t0 = Instant::now();
    assert!(!d.record(addr(1), Answer::ServerError, 2, t0));
    assert!(!d.record(addr(1), Answer::ServerError, 2, t0));
    assert!(!d.record(addr(1), Answer::GatewayError, 2, t0));
    assert!(d.record(addr(1), Answer::GatewayError, 2, t0));
    assert_eq!(Answer::of_status(503), Answer::GatewayError);
    assert_eq!(Answer::of_status(500), Answer::ServerError);
    assert_eq!(Answer::of_status(404), Answer::Success);
}

/// No more than max% of the endpoints out at once, but always at least one may go.
#[test]
fn ejection_is_capped() {
    let d = OutlierDetector::new(OutlierConfig {
        max_ejection_percent: 10,
        ..config(1)
    });
    let t0 = Instant::now();
    // 10 % of 2 rounds to 0, yet one endpoint can be ejected; the second cannot.
    assert!(d.record(addr(1), Answer::ServerError, 2, t0));
    assert!(!d.record(addr(2), Answer::ServerError, 2, t0));
    assert!(!d.is_ejected(addr(2), t0));
}

/// Ejection ends on a multiple of the interval, as Envoy's sweep would end it.
#[test]
fn ejection_ends_on_the_interval() {
    let d = OutlierDetector::new(OutlierConfig {
        interval: Duration::from_secs(7),
        base_ejection_time: Duration::from_secs(10),
        ..config(1)
    });
    let t0 = Instant::now();
    assert!(d.record(addr(1), Answer::ServerError, 1, t0));
    assert!(d.is_ejected(addr(1), t0 + Duration::from_secs(13)));
    assert!(!d.is_ejected(addr(1), t0 + Duration::from_secs(14)));
}

/// 100 requests a second allow 20 retries a second, plus the floor; past it, none.
#[test]
fn retry_budget_allows_a_ratio_plus_a_floor() {
    let b = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.2,
        min_per_second: 1,
        window: Duration::from_secs(10),
    });
    let t0 = Instant::now();
    for s in 0..10 {
        let now = t0 + Duration::from_secs(s);
        for _ in 0..100 {
            b.deposit(now);
        }
    }
    let now = t0 + Duration::from_secs(9);
    let granted = (0..1_000).filter(|_| b.try_withdraw(now)).count();
    // 20 % of 1,000 requests plus 1 × 10 s.
    assert_eq!(granted, 210);
    // The window slides: ten seconds later the old requests no longer count, and neither
    // do the old retries.
    let later = t0 + Duration::from_secs(25);
    let granted = (0..1_000).filter(|_| b.try_withdraw(later)).count();
    assert_eq!(granted, 10, "only the floor");
}

/// Past the concurrency limit requests wait; past the pending limit they fail at once.
#[tokio::test]
async fn concurrency_limit_queues_then_fails_fast() {
    let limit = Arc::new(ConcurrencyLimit::new("reviews", 2, 1));
    let a = limit.acquire().await.unwrap();
    let _b = limit.acquire().await.unwrap();
    // The third waits.
    let l2 = limit.clone();
    let waiter = tokio::spawn(async move { l2.acquire().await.map(|_| ()) });
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    // The fourth finds the queue full.
    let err = limit.acquire().await.unwrap_err();
    assert_eq!((err.in_flight, err.pending), (2, 1));
    assert!(err.to_string().contains("reviews"), "{err}");
    // A slot frees: the waiter gets it.
    drop(a);
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("waiter served")
        .unwrap()
        .unwrap();
    // A cancelled wait leaves the queue.
    let l3 = limit.clone();
    let _c = limit.acquire().await.unwrap();
    let cancelled = tokio::spawn(async move { l3.acquire().await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    cancelled.abort();
    let _ = cancelled.await;
    assert_eq!(limit.pending.load(Ordering::Acquire), 0);
}
