use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";
const ZERO_TRACE: &str = "00000000000000000000000000000000";
const ZERO_SPAN: &str = "0000000000000000";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
            HeaderValue::from_str(v).expect("test header value"),
        );
    }
    h
}

/// What `extract` found, in hex: (trace id, span id, sampled).
fn found(h: &HeaderMap) -> Option<(String, String, bool)> {
    extract(h).map(|c| (c.trace_id_hex(), c.span_id_hex(), c.sampled))
}

fn ctx(trace: &str, span: &str, sampled: bool) -> TraceContext {
    TraceContext {
        trace_id: parse_hex(trace.as_bytes()).expect("test trace id"),
        span_id: parse_hex(span.as_bytes()).expect("test span id"),
        sampled,
        tracestate: None,
    }
}

/// Expected from `extract`: the trace id in hex and the sampled flag (the span id is always
/// [`SPAN`]); None for no context.
type Expect<'a> = Option<(&'a str, bool)>;

/// Headers as (name, value) pairs.
type Pairs<'a> = &'a [(&'a str, &'a str)];

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn traceparent() {
    let cases: &[(&str, String, Option<bool>)] = &[
        (
            "valid, sampled",
            format!("00-{TRACE}-{SPAN}-01"),
            Some(true),
        ),
        (
            "valid, not sampled",
            format!("00-{TRACE}-{SPAN}-00"),
            Some(false),
        ),
        (
            "other flag bits set",
            format!("00-{TRACE}-{SPAN}-03"),
            Some(true),
        ),
        (
            "only other flag bits",
            format!("00-{TRACE}-{SPAN}-02"),
            Some(false),
        ),
        (
            "surrounding whitespace",
            format!(" \t00-{TRACE}-{SPAN}-01 "),
            Some(true),
        ),
        (
            "uppercase trace id",
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            None,
        ),
        (
            "uppercase span id",
            format!("00-{TRACE}-00F067AA0BA902B7-01"),
            None,
        ),
        ("uppercase flags", format!("00-{TRACE}-{SPAN}-0A"), None),
        (
            "all-zero trace id",
            format!("00-{ZERO_TRACE}-{SPAN}-01"),
            None,
        ),
        (
            "all-zero span id",
            format!("00-{TRACE}-{ZERO_SPAN}-01"),
            None,
        ),
        ("version ff", format!("ff-{TRACE}-{SPAN}-01"), None),
        (
            "version 00 with more",
            format!("00-{TRACE}-{SPAN}-01-extra"),
            None,
        ),
        (
            "future version",
            format!("cc-{TRACE}-{SPAN}-01"),
            Some(true),
        ),
        (
            "future version, extra fields",
            format!("cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like"),
            Some(true),
        ),
        (
            "future version, no dash after flags",
            format!("cc-{TRACE}-{SPAN}-01x"),
            None,
        ),
        ("non-hex version", format!("0x-{TRACE}-{SPAN}-01"), None),
        (
            "non-hex trace id",
            format!("00-{}g-{SPAN}-01", &TRACE[..31]),
            None,
        ),
        (
            "short trace id",
            format!("00-{}-{SPAN}-01", &TRACE[..30]),
            None,
        ),
        ("wrong separator", format!("00_{TRACE}-{SPAN}-01"), None),
        ("empty", String::new(), None),
    ];
    for (what, value, sampled) in cases {
        let got = found(&headers(&[("traceparent", value)]));
        let want = sampled.map(|s| (TRACE.to_string(), SPAN.to_string(), s));
        assert_eq!(got, want, "{what}: {value:?}");
    }
}

#[test]
fn duplicate_traceparent_is_ignored() {
    let v = format!("00-{TRACE}-{SPAN}-01");
    assert_eq!(
        found(&headers(&[("traceparent", &v), ("traceparent", &v)])),
        None
    );
}

#[test]
fn tracestate() {
    let tp = format!("00-{TRACE}-{SPAN}-01");
    let long_value = "v".repeat(257);
    let too_many: String = (0..33).map(|i| format!("k{i}=v,")).collect();
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        (
            "one member",
            &["congo=t61rcWkgMzE"],
            Some("congo=t61rcWkgMzE"),
        ),
        (
            "several, with whitespace and an empty member",
            &["rojo=00f067aa0ba902b7, ,congo=t61rcWkgMzE"],
            Some("rojo=00f067aa0ba902b7, ,congo=t61rcWkgMzE"),
        ),
        (
            "two header lines are one list",
            &["rojo=1", "congo=2"],
            Some("rojo=1,congo=2"),
        ),
        (
            "multi-tenant key",
            &["fw529a3039@dt=x"],
            Some("fw529a3039@dt=x"),
        ),
        ("duplicate key", &["rojo=1,congo=2,rojo=3"], None),
        ("no equals sign", &["rojo"], None),
        ("uppercase key", &["Rojo=1"], None),
        ("empty value", &["rojo="], None),
        (
            "value ending in a space",
            &["rojo=1 ,congo=2"],
            Some("rojo=1 ,congo=2"),
        ),
        ("value too long", &[&format!("k={long_value}")], None),
        ("33 members", &[&too_many], None),
        ("only commas", &[" , "], None),
    ];
    for (what, values, want) in cases {
        let mut h = headers(&[("traceparent", &tp)]);
        for v in *values {
            h.append("tracestate", HeaderValue::from_str(v).expect("test value"));
        }
        let got = extract(&h).expect("traceparent is valid");
        assert_eq!(
            got.tracestate.as_ref().and_then(|v| v.to_str().ok()),
            *want,
            "{what}"
        );
    }
}

#[test]
fn tracestate_without_valid_traceparent_is_dropped() {
    let h = headers(&[
        ("traceparent", &format!("00-{ZERO_TRACE}-{SPAN}-01")),
        ("tracestate", "rojo=1"),
    ]);
    assert_eq!(extract(&h), None);
}

#[test]
fn b3_single() {
    let short = &TRACE[16..];
    let padded = format!("{}{short}", "0".repeat(16));
    let cases: &[(&str, String, Expect)] = &[
        ("sampled", format!("{TRACE}-{SPAN}-1"), Some((TRACE, true))),
        (
            "not sampled",
            format!("{TRACE}-{SPAN}-0"),
            Some((TRACE, false)),
        ),
        ("debug", format!("{TRACE}-{SPAN}-d"), Some((TRACE, true))),
        ("deferred", format!("{TRACE}-{SPAN}"), Some((TRACE, false))),
        (
            "with parent",
            format!("{TRACE}-{SPAN}-1-{SPAN}"),
            Some((TRACE, true)),
        ),
        (
            "64-bit trace id",
            format!("{short}-{SPAN}-1"),
            Some((&padded, true)),
        ),
        ("sampling only: deny", "0".to_string(), None),
        ("sampling only: accept", "1".to_string(), None),
        ("sampling only: debug", "d".to_string(), None),
        ("unknown sampling state", format!("{TRACE}-{SPAN}-x"), None),
        ("bad parent", format!("{TRACE}-{SPAN}-1-xyz"), None),
        (
            "too many fields",
            format!("{TRACE}-{SPAN}-1-{SPAN}-1"),
            None,
        ),
        (
            "uppercase",
            format!("{}-{SPAN}-1", TRACE.to_uppercase()),
            None,
        ),
        ("all-zero trace id", format!("{ZERO_TRACE}-{SPAN}-1"), None),
        ("all-zero span id", format!("{TRACE}-{ZERO_SPAN}-1"), None),
        (
            "48-bit trace id",
            format!("{}-{SPAN}-1", &TRACE[..12]),
            None,
        ),
    ];
    for (what, value, want) in cases {
        let got = found(&headers(&[("b3", value)]));
        let want = want.map(|(t, s)| (t.to_string(), SPAN.to_string(), s));
        assert_eq!(got, want, "{what}: {value:?}");
    }
}

#[test]
fn b3_multi() {
    let short = &TRACE[16..];
    let padded = format!("{}{short}", "0".repeat(16));
    let cases: &[(&str, Pairs, Expect)] = &[
        (
            "sampled",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "1"),
            ],
            Some((TRACE, true)),
        ),
        (
            "sampled, old spelling",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "true"),
            ],
            Some((TRACE, true)),
        ),
        (
            "not sampled",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "0"),
            ],
            Some((TRACE, false)),
        ),
        (
            "debug flag",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-flags", "1"),
            ],
            Some((TRACE, true)),
        ),
        (
            "deferred",
            &[("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)],
            Some((TRACE, false)),
        ),
        (
            "64-bit trace id",
            &[
                ("x-b3-traceid", short),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "1"),
            ],
            Some((&padded, true)),
        ),
        (
            "no span id",
            &[("x-b3-traceid", TRACE), ("x-b3-sampled", "1")],
            None,
        ),
        (
            "no trace id",
            &[("x-b3-spanid", SPAN), ("x-b3-sampled", "1")],
            None,
        ),
        ("sampling only", &[("x-b3-sampled", "1")], None),
        (
            "bad span id",
            &[("x-b3-traceid", TRACE), ("x-b3-spanid", "xyz")],
            None,
        ),
    ];
    for (what, pairs, want) in cases {
        let got = found(&headers(pairs));
        let want = want.map(|(t, s)| (t.to_string(), SPAN.to_string(), s));
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn traceparent_comes_first_and_an_invalid_one_falls_through() {
    let other = "a3ce929d0e0e47364bf92f3577b34da6";
    let b3 = format!("{other}-{SPAN}-1");
    let h = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("b3", &b3),
    ]);
    assert_eq!(found(&h).map(|f| f.0), Some(TRACE.to_string()));
    let h = headers(&[
        ("traceparent", &format!("00-{ZERO_TRACE}-{SPAN}-01")),
        ("b3", &b3),
    ]);
    assert_eq!(found(&h).map(|f| f.0), Some(other.to_string()));
    let h = headers(&[("b3", &b3), ("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)]);
    assert_eq!(found(&h).map(|f| f.0), Some(other.to_string()));
}

#[test]
fn inject_round_trips() {
    for sampled in [true, false] {
        for tracestate in [None, Some(HeaderValue::from_static("rojo=1,congo=2"))] {
            let want = TraceContext {
                tracestate,
                ..ctx(TRACE, SPAN, sampled)
            };
            let mut h = HeaderMap::new();
            inject(&mut h, &want);
            assert_eq!(extract(&h), Some(want.clone()));
            // Only W3C headers are added when the request had no B3.
            assert_eq!(h.len(), 1 + usize::from(want.tracestate.is_some()));
        }
    }
}

#[test]
fn inject_replaces_old_context() {
    let mut h = headers(&[
        ("traceparent", &format!("00-{ZERO_TRACE}-{SPAN}-01")),
        ("tracestate", "stale=1"),
    ]);
    let new = ctx(TRACE, "1111111111111111", true);
    inject(&mut h, &new);
    assert_eq!(
        get(&h, "traceparent"),
        Some(format!("00-{TRACE}-1111111111111111-01").as_str())
    );
    assert_eq!(get(&h, "tracestate"), None);
}

#[test]
fn inject_rewrites_b3_single_in_its_own_form() {
    let short = &TRACE[16..];
    let child = "1111111111111111";
    let cases: &[(&str, String, bool, Option<String>)] = &[
        (
            "sampled: the app's span becomes the parent",
            format!("{TRACE}-{SPAN}-1"),
            true,
            Some(format!("{TRACE}-{child}-1-{SPAN}")),
        ),
        (
            "not sampled",
            format!("{TRACE}-{SPAN}-0"),
            false,
            Some(format!("{TRACE}-{child}-0-{SPAN}")),
        ),
        (
            "debug stays debug",
            format!("{TRACE}-{SPAN}-d"),
            true,
            Some(format!("{TRACE}-{child}-d-{SPAN}")),
        ),
        (
            "deferred stays deferred",
            format!("{TRACE}-{SPAN}"),
            false,
            Some(format!("{TRACE}-{child}")),
        ),
        (
            "64-bit id stays 64-bit",
            format!("{short}-{SPAN}-1"),
            true,
            Some(format!("{short}-{child}-1-{SPAN}")),
        ),
        (
            "sampling only is left alone",
            "0".to_string(),
            false,
            Some("0".to_string()),
        ),
    ];
    for (what, came, sampled, want) in cases {
        let mut h = headers(&[("b3", came)]);
        let parent = extract(&h).unwrap_or_else(|| ctx(TRACE, SPAN, *sampled));
        let next = TraceContext {
            span_id: parse_hex(child.as_bytes()).expect("test span id"),
            ..parent
        };
        inject(&mut h, &next);
        assert_eq!(get(&h, "b3").map(str::to_owned), *want, "{what}");
        // The rewritten header reads back as the context it was given.
        if came.contains('-') {
            let b3_only = headers(&[("b3", get(&h, "b3").expect("b3 header"))]);
            assert_eq!(extract(&b3_only), Some(next.clone()), "{what}");
        }
    }
}

#[test]
fn inject_rewrites_b3_multi_in_its_own_form() {
    let child = "1111111111111111";
    let short = &TRACE[16..];
    // (what, headers the app sent, want: traceid, parentspanid, sampled, flags)
    type Want<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let cases: &[(&str, Pairs, Want)] = &[
        (
            "sampled",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "1"),
            ],
            (TRACE, Some(SPAN), Some("1"), None),
        ),
        (
            "debug",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-flags", "1"),
            ],
            (TRACE, Some(SPAN), None, Some("1")),
        ),
        (
            "deferred, 64-bit",
            &[("x-b3-traceid", short), ("x-b3-spanid", SPAN)],
            (short, Some(SPAN), None, None),
        ),
        (
            "stale parent replaced",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-parentspanid", "2222222222222222"),
                ("x-b3-sampled", "0"),
            ],
            (TRACE, Some(SPAN), Some("0"), None),
        ),
    ];
    for (what, pairs, (trace, parent, sampled, flags)) in cases {
        let mut h = headers(pairs);
        let next = TraceContext {
            span_id: parse_hex(child.as_bytes()).expect("test span id"),
            ..extract(&h).expect("valid B3")
        };
        inject(&mut h, &next);
        assert_eq!(get(&h, "x-b3-traceid"), Some(*trace), "{what}");
        assert_eq!(get(&h, "x-b3-spanid"), Some(child), "{what}");
        assert_eq!(get(&h, "x-b3-parentspanid"), *parent, "{what}");
        assert_eq!(get(&h, "x-b3-sampled"), *sampled, "{what}");
        assert_eq!(get(&h, "x-b3-flags"), *flags, "{what}");
        assert!(h.contains_key("traceparent"), "{what}");
    }
}

#[test]
fn b3_of_another_trace_gets_no_parent() {
    let mut h = headers(&[("b3", &format!("{TRACE}-{SPAN}-1-{SPAN}"))]);
    let other = ctx("a3ce929d0e0e47364bf92f3577b34da6", "1111111111111111", true);
    inject(&mut h, &other);
    assert_eq!(
        get(&h, "b3"),
        Some("a3ce929d0e0e47364bf92f3577b34da6-1111111111111111-1")
    );
}

#[test]
fn parent_based_sampling() {
    let sampled = ctx(TRACE, SPAN, true);
    let unsampled = ctx(TRACE, SPAN, false);
    let cases: &[(f64, Option<&TraceContext>, bool)] = &[
        (0.0, Some(&sampled), true),
        (1.0, Some(&unsampled), false),
        (0.0, None, false),
        (1.0, None, true),
    ];
    for (sampling, parent, want) in cases {
        let tracer = Tracer::new(None, *sampling, Resource::default()).expect("valid tracer");
        // Repeated: a probabilistic decision would show within a few hundred tries.
        for _ in 0..200 {
            let span = tracer.start(SpanKind::Server, "test", *parent);
            assert_eq!(
                span.context().sampled,
                *want,
                "sampling {sampling}, parent {parent:?}"
            );
        }
    }
}

#[test]
fn sampling_probability_is_roughly_kept() {
    let tracer = Tracer::new(None, 0.5, Resource::default()).expect("valid tracer");
    let sampled = (0..2000)
        .filter(|_| tracer.start(SpanKind::Client, "t", None).context().sampled)
        .count();
    // Binomial(2000, 0.5): the standard deviation is about 22, so this is ~9 sigma wide.
    assert!((800..=1200).contains(&sampled), "{sampled} of 2000 sampled");
}

#[tokio::test]
async fn child_span_joins_its_parent() {
    let tracer = Tracer::new(Some("http://127.0.0.1:9".into()), 1.0, Resource::default())
        .expect("valid tracer");
    let root = tracer.start(SpanKind::Client, "root", None);
    assert!(root.is_recording());
    let parent = root.context();
    let child = tracer.start(SpanKind::Server, "child", Some(&parent));
    let c = child.context();
    assert_eq!(c.trace_id, parent.trace_id);
    assert_ne!(c.span_id, parent.span_id);
    let data = &child.recording.as_ref().expect("sampled span records").data;
    assert_eq!(data.parent_span_id, Some(parent.span_id));
    assert_eq!(
        root.recording.as_ref().map(|r| r.data.parent_span_id),
        Some(None)
    );
    // A new root starts a new trace.
    let other = tracer.start(SpanKind::Client, "other", None);
    assert_ne!(other.context().trace_id, parent.trace_id);
    assert_eq!(root.trace_id_hex(), parent.trace_id_hex());
    assert_eq!(root.trace_id_hex().len(), 32);
}

#[test]
fn unsampled_and_unexported_spans_record_nothing() {
    let tracer = Tracer::new(None, 1.0, Resource::default()).expect("valid tracer");
    let mut span = tracer.start(SpanKind::Client, "no endpoint", None);
    assert!(
        span.context().sampled,
        "still sampled, for the hops that export"
    );
    assert!(!span.is_recording());
    span.set_attribute("http.response.status_code", 200);
    span.set_error("ignored");
    span.end();
    assert_eq!(tracer.dropped(), 0);
    assert!(
        !Tracer::propagate_only()
            .start(SpanKind::Server, "p", None)
            .context()
            .sampled
    );
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let tracer = Tracer::new(Some("http://127.0.0.1:9".into()), 1.0, Resource::default())
        .expect("valid tracer");
    // The exporter cannot run before this test awaits (current-thread runtime), so the
    // queue takes exactly its capacity.
    for _ in 0..5000 {
        tracer.start(SpanKind::Client, "burst", None).end();
    }
    assert_eq!(tracer.dropped(), 5000 - 4096);
}

#[test]
fn tracer_rejects_bad_settings() {
    let cases: &[(Option<&str>, f64, &str)] = &[
        (None, 1.5, "not between 0 and 1"),
        (None, -0.1, "not between 0 and 1"),
        (None, f64::NAN, "not between 0 and 1"),
        (Some("http://collector:4317 x"), 1.0, "is not a URI"),
        (Some("https://collector:4317"), 1.0, "must be http://"),
        (Some("collector:4317"), 1.0, "must be http://"),
        (Some("/v1/traces"), 1.0, "must be http://"),
        // Valid, but there is no runtime for the exporter in a plain #[test].
        (Some("http://collector:4317"), 1.0, "needs a tokio runtime"),
    ];
    for (endpoint, sampling, want) in cases {
        let err = Tracer::new(endpoint.map(str::to_owned), *sampling, Resource::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(want), "{endpoint:?} {sampling}: {err:?}");
    }
}
