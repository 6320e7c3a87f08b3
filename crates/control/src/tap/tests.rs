use super::*;

fn key(name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn event(tap_id: &str, path: &str) -> proto::TapEvent {
    proto::TapEvent {
        tap_id: tap_id.into(),
        reporter: "destination".into(),
        method: "GET".into(),
        path: path.into(),
        status: 200,
        ..Default::default()
    }
}

fn ids(set: &proto::TapControl) -> Vec<&str> {
    set.taps.iter().map(|t| t.id.as_str()).collect()
}

#[test]
fn a_tap_needs_a_connected_proxy_of_its_workload() {
    let reg = TapRegistry::new();
    assert_eq!(
        reg.open(key("reviews-v1"), TapFilter::default()).err(),
        Some(TapError::NoProxy(key("reviews-v1")))
    );
    let (_proxy, _rx) = reg.connect(key("ratings-v1"));
    assert!(reg.open(key("reviews-v1"), TapFilter::default()).is_err());
    let mut other_ns = key("ratings-v1");
    other_ns.namespace = "staging".into();
    assert!(reg.open(other_ns, TapFilter::default()).is_err());
    assert!(reg.open(key("ratings-v1"), TapFilter::default()).is_ok());
}

#[test]
fn every_proxy_of_the_workload_gets_the_whole_set_on_each_change() {
    let reg = TapRegistry::new();
    let (_a, mut a) = reg.connect(key("reviews-v1"));
    let (_b, mut b) = reg.connect(key("reviews-v1"));
    let (_other, other) = reg.connect(key("ratings-v1"));
    assert!(!a.has_changed().unwrap(), "no tap, nothing to send");

    let filter = TapFilter {
        path_prefix: "/api".into(),
        method: "GET".into(),
    };
    let t1 = reg.open(key("reviews-v1"), filter.clone()).unwrap();
    assert_eq!(t1.id().len(), 32);
    for rx in [&mut a, &mut b] {
        assert!(rx.has_changed().unwrap());
        let set = rx.borrow_and_update().clone();
        assert_eq!(
            set.taps,
            vec![proto::TapRequest {
                id: t1.id().into(),
                path_prefix: "/api".into(),
                method: "GET".into(),
            }]
        );
    }
    assert!(
        !other.has_changed().unwrap(),
        "another workload's taps are not its business"
    );

    let t2 = reg.open(key("reviews-v1"), TapFilter::default()).unwrap();
    let mut want = vec![t1.id().to_string(), t2.id().to_string()];
    want.sort();
    assert_eq!(ids(&a.borrow_and_update()), want);
    assert_eq!(reg.len(), 2);

    // Closing one leaves the other; closing both leaves an empty set, sent too.
    let t2_id = t2.id().to_string();
    drop(t1);
    assert_eq!(ids(&a.borrow_and_update()), [t2_id.as_str()]);
    drop(t2);
    assert!(a.has_changed().unwrap());
    assert!(a.borrow_and_update().taps.is_empty());
    assert!(b.borrow_and_update().taps.is_empty());
    assert!(reg.is_empty());
    assert!(!other.has_changed().unwrap());
}

#[test]
fn a_proxy_connecting_while_taps_are_open_gets_them_at_once() {
    let reg = TapRegistry::new();
    let (first, _rx) = reg.connect(key("reviews-v1"));
    let tap = reg.open(key("reviews-v1"), TapFilter::default()).unwrap();
    // The proxy restarts: the tap outlives it, and the new stream is told.
    drop(first);
    let (_second, mut rx) = reg.connect(key("reviews-v1"));
    assert!(rx.has_changed().unwrap());
    assert_eq!(ids(&rx.borrow_and_update()), [tap.id()]);
}

#[tokio::test]
async fn events_are_routed_by_tap_id_to_their_workload_only() {
    let reg = TapRegistry::new();
    let (reviews, _r) = reg.connect(key("reviews-v1"));
    let (ratings, _q) = reg.connect(key("ratings-v1"));
    let mut a = reg.open(key("reviews-v1"), TapFilter::default()).unwrap();
    let mut b = reg.open(key("reviews-v1"), TapFilter::default()).unwrap();
    let (a_id, b_id) = (a.id().to_string(), b.id().to_string());

    let dropped = reviews.deliver(vec![
        event(&a_id, "/one"),
        event(&b_id, "/two"),
        event("no-such-tap", "/three"),
    ]);
    assert_eq!(dropped, 1);
    assert_eq!(a.next().await.unwrap().path, "/one");
    assert_eq!(b.next().await.unwrap().path, "/two");

    // Another workload's proxy cannot write into these taps.
    assert_eq!(ratings.deliver(vec![event(&a_id, "/forged")]), 1);
    assert!(a.events.try_recv().is_err());
}

#[test]
fn a_slow_reader_loses_events_instead_of_stalling_the_proxy() {
    let reg = TapRegistry::new();
    let (proxy, _rx) = reg.connect(key("reviews-v1"));
    let mut tap = reg.open(key("reviews-v1"), TapFilter::default()).unwrap();
    let id = tap.id().to_string();
    let events: Vec<_> = (0..EVENT_BUFFER + 10)
        .map(|i| event(&id, &format!("/{i}")))
        .collect();
    assert_eq!(proxy.deliver(events), 10);
    // The first ones are kept, in order.
    assert_eq!(tap.events.try_recv().unwrap().path, "/0");
    // Closed taps drop everything.
    drop(tap);
    assert_eq!(proxy.deliver(vec![event(&id, "/late")]), 1);
}

#[test]
fn taps_are_bounded() {
    let reg = TapRegistry::new();
    let (_proxy, _rx) = reg.connect(key("reviews-v1"));
    let open: Vec<_> = (0..MAX_TAPS)
        .map(|_| reg.open(key("reviews-v1"), TapFilter::default()).unwrap())
        .collect();
    assert_eq!(
        reg.open(key("reviews-v1"), TapFilter::default()).err(),
        Some(TapError::TooMany)
    );
    drop(open);
    assert!(reg.open(key("reviews-v1"), TapFilter::default()).is_ok());
}

#[test]
fn events_serialize_with_the_proto_field_names() {
    let json = serde_json::to_value(TapEventJson::from(proto::TapEvent {
        tap_id: "t".into(),
        start_unix_micros: 1_700_000_000_000_000,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        duration_micros: 1500,
        grpc_status: "OK".into(),
        ..event("t", "/p")
    }))
    .unwrap();
    assert_eq!(json["tap_id"], "t");
    assert_eq!(json["start_unix_micros"], 1_700_000_000_000_000i64);
    assert_eq!(json["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(json["duration_micros"], 1500);
    assert_eq!(json["grpc_status"], "OK");
    assert_eq!(json["path"], "/p");
    assert_eq!(json.as_object().unwrap().len(), 19);
}
