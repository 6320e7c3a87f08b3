use super::*;

#[test]
fn deadline_and_mark_travel_in_headers() {
    let now = Instant::now();
    let mut h = HeaderMap::new();
    Inherited::default()
        .with_timeout(Some(Duration::from_millis(1500)), now)
        .to_headers(&mut h, true, now + Duration::from_millis(500));
    assert_eq!(h.get(DEADLINE).unwrap(), "1000");
    assert_eq!(h.get(RETRY_LAYER).unwrap(), "1");
    let got = Inherited::from_headers(&h, now);
    assert_eq!(got.remaining(now), Some(Duration::from_millis(1000)));
    assert!(got.retried_above);
    // Without a timeout or a mark, nothing is sent, and stale values go.
    Inherited::default().to_headers(&mut h, false, now);
    assert!(h.is_empty(), "{h:?}");
    // Garbage is ignored.
    h.insert(DEADLINE, HeaderValue::from_static("soon"));
    assert_eq!(Inherited::from_headers(&h, now).deadline, None);
}

#[test]
fn the_earlier_deadline_wins() {
    let now = Instant::now();
    let caller = Inherited {
        deadline: Some(now + Duration::from_millis(300)),
        retried_above: false,
    };
    let d = caller.with_timeout(Some(Duration::from_secs(1)), now);
    assert_eq!(d.remaining(now), Some(Duration::from_millis(300)));
    let d = caller.with_timeout(Some(Duration::from_millis(100)), now);
    assert_eq!(d.remaining(now), Some(Duration::from_millis(100)));
    assert_eq!(
        caller.remaining(now + Duration::from_secs(2)),
        Some(Duration::ZERO)
    );
    assert_eq!(Inherited::default().with_timeout(None, now).deadline, None);
}

#[test]
fn chains_are_known_while_served() {
    let chains = Arc::new(Chains::default());
    let now = Instant::now();
    let t = key(7);
    assert_eq!(chains.lookup(&t), Inherited::default());
    let a = chains.enter(
        t,
        Inherited {
            deadline: Some(now + Duration::from_secs(5)),
            retried_above: false,
        },
    );
    let b = chains.enter(
        t,
        Inherited {
            deadline: Some(now + Duration::from_secs(1)),
            retried_above: true,
        },
    );
    let got = chains.lookup(&t);
    assert_eq!(got.remaining(now), Some(Duration::from_secs(1)));
    assert!(got.retried_above);
    drop(a);
    assert!(chains.lookup(&t).retried_above, "still served once");
    drop(b);
    // Ended with a deadline: still known, so a call the app makes after its caller left
    // finds that the deadline has passed.
    assert!(chains.knows(&t));
    let u = key(8);
    drop(chains.enter(u, Inherited::default()));
    assert!(!chains.knows(&u), "without a deadline, forgotten at once");
}

#[test]
fn ended_chains_are_swept_after_their_retention() {
    let chains = Arc::new(Chains::default());
    let long_ago = Instant::now() - RETAIN_AFTER_DEADLINE - Duration::from_secs(1);
    for i in 0..300u16 {
        let mut id = key(0);
        id.trace_id[..2].copy_from_slice(&i.to_be_bytes());
        drop(chains.enter(
            id,
            Inherited {
                deadline: Some(long_ago),
                retried_above: false,
            },
        ));
    }
    assert!(chains.len() < 256, "{} chains kept", chains.len());
}

/// A chain whose requests ended keeps no longer than twice the retention, whatever
/// deadline the caller sent.
#[test]
fn a_far_deadline_is_not_kept_for_long() {
    let chains = Arc::new(Chains::default());
    let now = Instant::now();
    let far = Inherited {
        deadline: Some(now + Duration::from_secs(3600)),
        retried_above: false,
    };
    drop(chains.enter(key(9), far));
    let open = chains.open.lock().unwrap();
    let forget_at = open.map.get(&key(9)).and_then(|o| o.forget_at).unwrap();
    assert!(forget_at <= Instant::now() + 2 * RETAIN_AFTER_DEADLINE);
}

/// Headers of a request as a peer proxy sends it: a `traceparent` the caller chose, and
/// maybe a deadline.
fn from_peer(traceparent: &str, deadline_ms: Option<u64>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
    if let Some(ms) = deadline_ms {
        h.insert(DEADLINE, HeaderValue::from(ms));
    }
    h
}

/// What the server proxy does with an inbound request: binds the chain to the context
/// the app receives and remembers what the caller asked for.
fn serve(chains: &Arc<Chains>, headers: &mut HeaderMap, now: Instant) -> Option<Entered> {
    let inherited = Inherited::from_headers(headers, now);
    let key = bind(headers, false)?;
    (inherited != Inherited::default()).then(|| chains.enter(key, inherited))
}

/// What the client proxy looks up for a call the app makes with the context it was
/// handed (forwarded as is, as apps forward `traceparent`).
fn call(chains: &Chains, forwarded: &HeaderMap) -> Inherited {
    let ctx = crate::trace::extract(forwarded).unwrap();
    chains.lookup(&ChainKey::of(&ctx))
}

/// An attacker who picks a trace id (or learns another client's) and sends it with a
/// deadline that has passed and a retry mark cannot make another request of that trace
/// fail or lose its retries: its state is bound to the span id the proxy handed the
/// attacker's own request, which the other request never carries.
#[test]
fn a_chosen_trace_id_reaches_no_other_request() {
    let chains = Arc::new(Chains::default());
    let now = Instant::now();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut attacker = from_peer(tp, Some(0));
    attacker.insert(RETRY_LAYER, HeaderValue::from_static("1"));
    let attack = serve(&chains, &mut attacker, now).expect("attacker's chain entered");
    // The attacker's own app calls find the passed deadline and the mark.
    let own = call(&chains, &attacker);
    assert_eq!(own.remaining(now), Some(Duration::ZERO));
    assert!(own.retried_above);
    // The span id handed to the app is this proxy's, not the one the attacker sent.
    let handed = crate::trace::extract(&attacker).unwrap();
    assert_eq!(handed.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(handed.span_id_hex(), "b7ad6b7169203331");
    // Another client's request of the same trace (same traceparent, even) inherits
    // nothing from it, while the attacker's request is served and after it ended.
    let mut victim = from_peer(tp, None);
    let _victim = serve(&chains, &mut victim, now);
    assert_eq!(call(&chains, &victim), Inherited::default());
    drop(attack);
    assert_eq!(call(&chains, &victim), Inherited::default());
    // Nor does a call carrying the traceparent the attacker sent.
    assert_eq!(call(&chains, &from_peer(tp, None)), Inherited::default());
    // The victim's own deadline still reaches its own calls.
    let mut timed = from_peer(tp, Some(5_000));
    let _timed = serve(&chains, &mut timed, now);
    let got = call(&chains, &timed);
    assert_eq!(got.remaining(now), Some(Duration::from_secs(5)));
    assert!(!got.retried_above);
}

/// A request without a trace context gets one to forward; with telemetry on, the server
/// span's context (already written by the proxy) is the key.
#[test]
fn binding_starts_a_trace_or_keeps_the_proxys_span() {
    let mut none = HeaderMap::new();
    let key = bind(&mut none, false).unwrap();
    assert_eq!(
        ChainKey::of(&crate::trace::extract(&none).unwrap()),
        key,
        "the app receives the key's context"
    );
    let tp = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
    let mut minted = from_peer(tp, None);
    let key = bind(&mut minted, true).unwrap();
    assert_eq!(
        hex(&key.span_id),
        "00f067aa0ba902b7",
        "left as telemetry wrote it"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key(n: u8) -> ChainKey {
    ChainKey {
        trace_id: [n; 16],
        span_id: [n; 8],
    }
}
