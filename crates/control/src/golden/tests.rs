use super::*;

fn reporter(name: &str, ip: &str) -> Arc<Reporter> {
    Arc::new(Reporter {
        namespace: "default".into(),
        workload: name.into(),
        address: ip.parse().unwrap(),
    })
}

/// An edge from `default/from` to `service.default` served by `to`, `requests` of which
/// `failures` failed, every request taking `micros`.
fn edge(
    from: &str,
    service: &str,
    to: &str,
    requests: u64,
    failures: u64,
    micros: u64,
) -> proto::EdgeStats {
    let mut h = LatencyHistogram::default();
    for _ in 0..requests {
        h.observe(micros);
    }
    proto::EdgeStats {
        source_workload: from.into(),
        source_namespace: "default".into(),
        source_principal: format!("spiffe://cluster.local/ns/default/sa/{from}"),
        destination_service: format!("{service}.default.svc.cluster.local"),
        destination_workload: to.into(),
        destination_namespace: "default".into(),
        protocol: "http".into(),
        requests,
        failures,
        latency_counts: h.counts().to_vec(),
        latency_sum_micros: h.sum_micros(),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn window(w: u64) -> Query {
    Query {
        window: Some(secs(w)),
        ..Default::default()
    }
}

#[test]
fn rate_is_requests_over_the_time_each_proxy_covered() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    let b = reporter("reviews-v2", "127.0.1.4");
    // reviews-v1 has been up all along: 15 reports of 2 s, 20 requests each (10 rps).
    for i in 1..=15 {
        g.record(
            &a,
            t0 + secs(2 * i),
            2000,
            vec![edge("productpage", "reviews", "reviews-v1", 20, 0, 1000)],
        );
    }
    // reviews-v2 came up 5 s ago: 2.5 s of reports, 5 rps. Divided by the 30 s window it
    // would read 0.4 rps.
    g.record(
        &b,
        t0 + secs(28),
        2500,
        vec![edge("productpage", "reviews", "reviews-v2", 12, 0, 1000)],
    );
    g.record(
        &b,
        t0 + secs(30),
        2500,
        vec![edge("productpage", "reviews", "reviews-v2", 13, 0, 1000)],
    );

    let s = g.query(t0 + secs(30), &window(30));
    assert_eq!(s.window_secs, 30);
    assert_eq!(s.services.len(), 1);
    let svc = &s.services[0];
    assert_eq!(svc.service, "reviews.default.svc.cluster.local");
    assert_eq!(svc.name, "reviews");
    assert_eq!(svc.namespace, "default");
    assert_eq!(svc.signals.requests, 300 + 25);
    assert!((svc.signals.rps - 15.0).abs() < 1e-9, "{}", svc.signals.rps);

    assert_eq!(s.edges.len(), 2);
    let v1 = &s.edges[0];
    assert_eq!(v1.destination_workload, "reviews-v1");
    assert_eq!(v1.source, "default/productpage");
    assert!((v1.signals.rps - 10.0).abs() < 1e-9, "{}", v1.signals.rps);
    let v2 = &s.edges[1];
    assert_eq!(v2.destination_workload, "reviews-v2");
    assert!((v2.signals.rps - 5.0).abs() < 1e-9, "{}", v2.signals.rps);
}

#[test]
fn empty_reports_count_as_covered_time() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    // 10 s of reports, traffic only in the last 2 s: 20 requests over 10 s.
    for i in 1..=4 {
        g.record(&a, t0 + secs(2 * i), 2000, vec![]);
    }
    g.record(
        &a,
        t0 + secs(10),
        2000,
        vec![edge("productpage", "reviews", "reviews-v1", 20, 0, 1000)],
    );
    let s = g.query(t0 + secs(10), &window(30));
    assert!(
        (s.services[0].signals.rps - 2.0).abs() < 1e-9,
        "{}",
        s.services[0].signals.rps
    );
    assert_eq!(
        g.occupancy(),
        Occupancy {
            reports: 5,
            edges: 1
        }
    );
}

#[test]
fn a_proxy_that_reconnects_is_one_reporter() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    // Two streams of the same proxy (same workload and address) one after the other, at
    // 10 rps each: 10 rps, not 20.
    let first = reporter("reviews-v1", "127.0.1.3");
    let second = reporter("reviews-v1", "127.0.1.3");
    for i in 1..=5 {
        g.record(
            &first,
            t0 + secs(2 * i),
            2000,
            vec![edge("productpage", "reviews", "reviews-v1", 20, 0, 1000)],
        );
    }
    for i in 6..=10 {
        g.record(
            &second,
            t0 + secs(2 * i),
            2000,
            vec![edge("productpage", "reviews", "reviews-v1", 20, 0, 1000)],
        );
    }
    let s = g.query(t0 + secs(20), &window(30));
    assert!(
        (s.services[0].signals.rps - 10.0).abs() < 1e-9,
        "{}",
        s.services[0].signals.rps
    );
}

#[test]
fn success_is_exact_over_the_window() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    let b = reporter("reviews-v2", "127.0.1.4");
    g.record(
        &a,
        t0 + secs(1),
        2000,
        vec![edge("productpage", "reviews", "reviews-v1", 1000, 1, 1000)],
    );
    g.record(
        &b,
        t0 + secs(2),
        2000,
        vec![edge("productpage", "reviews", "reviews-v2", 1, 1, 1000)],
    );
    // More failures than requests is a proxy bug, clamped.
    g.record(
        &b,
        t0 + secs(3),
        2000,
        vec![edge("ratings", "reviews", "reviews-v2", 2, 5, 1000)],
    );
    let s = g.query(t0 + secs(3), &window(30));
    let svc = &s.services[0].signals;
    assert_eq!((svc.requests, svc.failures), (1003, 4));
    assert_eq!(svc.success_rate, Some(1.0 - 4.0 / 1003.0));
    let v1 = s
        .edges
        .iter()
        .find(|e| e.destination_workload == "reviews-v1")
        .unwrap();
    assert!((v1.signals.success_rate.unwrap() - 0.999).abs() < 1e-12);
    let clamped = s
        .edges
        .iter()
        .find(|e| e.source == "default/ratings")
        .unwrap();
    assert_eq!(clamped.signals.success_rate, Some(0.0));

    // An edge without requests (a TCP connection still open) has no success rate.
    g.record(
        &a,
        t0 + secs(4),
        2000,
        vec![edge("productpage", "details", "details-v1", 0, 0, 0)],
    );
    let s = g.query(
        t0 + secs(4),
        &Query {
            service: Some("details".into()),
            ..window(30)
        },
    );
    assert_eq!(s.services[0].signals.success_rate, None);
    assert_eq!(s.services[0].signals.p50_ms, None);
}

#[test]
fn percentiles_come_from_the_merged_histograms() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    let b = reporter("reviews-v2", "127.0.1.4");
    // 90 fast requests (1 ms) on one proxy, 10 slow ones (100 ms) on the other: the median
    // is fast, p95 and p99 are slow.
    g.record(
        &a,
        t0 + secs(1),
        2000,
        vec![edge("productpage", "reviews", "reviews-v1", 90, 0, 1_000)],
    );
    g.record(
        &b,
        t0 + secs(1),
        2000,
        vec![edge("productpage", "reviews", "reviews-v2", 10, 0, 100_000)],
    );
    let s = g.query(t0 + secs(2), &window(30));
    let svc = &s.services[0].signals;
    let near = |got: Option<f64>, want: f64| {
        let got = got.unwrap();
        assert!((got - want).abs() / want <= 0.2, "{got} vs {want}");
    };
    near(svc.p50_ms, 1.0);
    near(svc.p95_ms, 100.0);
    near(svc.p99_ms, 100.0);
    // Each edge has its own.
    near(s.edges[0].signals.p99_ms, 1.0);
    near(s.edges[1].signals.p50_ms, 100.0);
}

#[test]
fn foreign_histograms_count_without_latency() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    let mut foreign = edge("productpage", "reviews", "reviews-v1", 10, 1, 1000);
    foreign.latency_counts = vec![5, 5];
    let r = g.record(&a, t0 + secs(1), 2000, vec![foreign]);
    assert_eq!(
        r,
        Recorded {
            edges: 1,
            foreign_layout: 1,
            dropped: 0
        }
    );
    let s = g.query(t0 + secs(1), &window(30));
    let svc = &s.services[0].signals;
    assert_eq!((svc.requests, svc.failures), (10, 1));
    assert_eq!(svc.p50_ms, None);

    // Merged with a good one, only the good one's latency shows.
    g.record(
        &a,
        t0 + secs(2),
        2000,
        vec![edge("productpage", "reviews", "reviews-v1", 10, 0, 50_000)],
    );
    let s = g.query(t0 + secs(2), &window(30));
    let p50 = s.services[0].signals.p50_ms.unwrap();
    assert!((40.0..=60.0).contains(&p50), "{p50}");
}

#[test]
fn reports_leave_the_window_and_expire() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    g.record(
        &a,
        t0 + secs(1),
        2000,
        vec![edge("productpage", "reviews", "reviews-v1", 10, 0, 1000)],
    );
    g.record(
        &a,
        t0 + secs(40),
        2000,
        vec![edge("productpage", "reviews", "reviews-v1", 4, 0, 1000)],
    );

    // At 41 s, a 30 s window holds only the second report; a 60 s one both.
    let s = g.query(t0 + secs(41), &window(30));
    assert_eq!(s.services[0].signals.requests, 4);
    assert!((s.services[0].signals.rps - 2.0).abs() < 1e-9);
    let s = g.query(t0 + secs(41), &window(60));
    assert_eq!(s.services[0].signals.requests, 14);
    assert!((s.services[0].signals.rps - 3.5).abs() < 1e-9);

    // Nothing in the last 30 s: no services at all.
    let s = g.query(t0 + secs(100), &window(30));
    assert!(s.services.is_empty() && s.edges.is_empty(), "{s:?}");

    // Past the retention, a new report pushes the old ones out.
    g.record(&a, t0 + secs(40) + RETENTION + secs(1), 2000, vec![]);
    assert_eq!(
        g.occupancy(),
        Occupancy {
            reports: 1,
            edges: 0
        }
    );
    assert!(
        g.lock().keys.is_empty(),
        "edge keys are released with their reports"
    );
}

#[test]
fn the_window_is_bounded() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    let many: Vec<_> = (0..MAX_EDGES_PER_REPORT + 5)
        .map(|i| edge(&format!("caller-{i}"), "reviews", "reviews-v1", 1, 0, 1000))
        .collect();
    let r = g.record(&a, t0, 2000, many);
    assert_eq!((r.edges, r.dropped), (MAX_EDGES_PER_REPORT, 5));

    let reports = MAX_ENTRIES / MAX_EDGES_PER_REPORT + 3;
    for i in 0..reports {
        let edges = (0..MAX_EDGES_PER_REPORT)
            .map(|j| edge(&format!("caller-{j}"), "reviews", "reviews-v1", 1, 0, 1000))
            .collect();
        g.record(&a, t0 + Duration::from_millis(i as u64), 2000, edges);
    }
    let o = g.occupancy();
    assert!(o.edges <= MAX_ENTRIES, "{o:?}");
    assert_eq!(o.reports, MAX_ENTRIES / MAX_EDGES_PER_REPORT);
    assert_eq!(
        g.lock().keys.len(),
        MAX_EDGES_PER_REPORT,
        "keys are shared by reports"
    );
}

#[test]
fn filters_select_destination_namespace_and_service() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    let mut other_ns = edge("productpage", "reviews", "reviews-v1", 7, 0, 1000);
    other_ns.destination_namespace = "staging".into();
    other_ns.destination_service = "reviews.staging.svc.cluster.local".into();
    g.record(
        &a,
        t0 + secs(1),
        2000,
        vec![
            edge("productpage", "reviews", "reviews-v1", 10, 0, 1000),
            edge("productpage", "details", "details-v1", 5, 0, 1000),
            edge("reviews-v1", "reviewsx", "reviewsx-v1", 3, 0, 1000),
            other_ns,
        ],
    );
    let now = t0 + secs(1);
    let names = |q: Query| -> Vec<String> {
        g.query(now, &q)
            .services
            .into_iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect()
    };
    assert_eq!(
        names(window(30)),
        [
            "default/details",
            "default/reviews",
            "default/reviewsx",
            "staging/reviews"
        ]
    );
    let ns = |n: &str| Query {
        namespace: Some(n.into()),
        ..window(30)
    };
    assert_eq!(names(ns("staging")), ["staging/reviews"]);
    let svc = |s: &str| Query {
        service: Some(s.into()),
        ..window(30)
    };
    // By name (not a prefix of another name), name.namespace, or host.
    assert_eq!(
        names(svc("reviews")),
        ["default/reviews", "staging/reviews"]
    );
    assert_eq!(names(svc("reviews.default")), ["default/reviews"]);
    assert_eq!(
        names(svc("reviews.staging.svc.cluster.local")),
        ["staging/reviews"]
    );
    assert_eq!(
        names(Query {
            namespace: Some("default".into()),
            ..svc("reviews")
        }),
        ["default/reviews"]
    );
    assert!(names(svc("ratings")).is_empty());
    // Edges follow the same filter.
    let s = g.query(now, &svc("details"));
    assert_eq!(s.edges.len(), 1);
    assert_eq!(s.edges[0].destination_workload, "details-v1");
}

#[test]
fn sources_are_workloads_principals_or_unmeshed() {
    let g = GoldenWindow::default();
    let t0 = Instant::now();
    let a = reporter("reviews-v1", "127.0.1.3");
    let mut by_principal = edge("", "reviews", "reviews-v1", 1, 0, 1000);
    by_principal.source_namespace.clear();
    by_principal.source_principal = "spiffe://cluster.local/ns/default/sa/legacy".into();
    let mut unmeshed = edge("", "reviews", "reviews-v1", 2, 0, 1000);
    unmeshed.source_namespace.clear();
    unmeshed.source_principal.clear();
    unmeshed.protocol = "tcp".into();
    g.record(
        &a,
        t0 + secs(1),
        2000,
        vec![
            edge("productpage", "reviews", "reviews-v1", 3, 0, 1000),
            by_principal,
            unmeshed,
        ],
    );
    let s = g.query(t0 + secs(1), &window(30));
    let sources: Vec<(&str, u64)> = s
        .edges
        .iter()
        .map(|e| (e.source.as_str(), e.signals.requests))
        .collect();
    assert_eq!(
        sources,
        [
            ("default/productpage", 3),
            ("spiffe://cluster.local/ns/default/sa/legacy", 1),
            ("unmeshed", 2)
        ]
    );
    assert_eq!(s.edges[2].protocols, ["tcp"]);
    assert_eq!(
        s.edges[1].source_principal,
        "spiffe://cluster.local/ns/default/sa/legacy"
    );
    assert_eq!(s.edges[0].source_workload, "productpage");
    assert_eq!(s.services[0].signals.requests, 6);
}

#[test]
fn windows_parse_between_a_second_and_ten_minutes() {
    assert_eq!(parse_window("30s"), Ok(secs(30)));
    assert_eq!(parse_window("30"), Ok(secs(30)));
    assert_eq!(parse_window("10m"), Ok(secs(600)));
    assert_eq!(parse_window("1500ms"), Ok(secs(1)));
    assert_eq!(parse_window("1.5m"), Ok(secs(90)));
    assert!(matches!(parse_window("11m"), Err(WindowError::TooLong(_))));
    assert!(matches!(
        parse_window("500ms"),
        Err(WindowError::TooShort(_))
    ));
    for bad in ["", "s", "-1s", "1h", "NaNs", "1e400s", "3 0s"] {
        assert!(
            matches!(
                parse_window(bad),
                Err(WindowError::Invalid(_)) | Err(WindowError::TooLong(_))
            ),
            "{bad}"
        );
    }
}
