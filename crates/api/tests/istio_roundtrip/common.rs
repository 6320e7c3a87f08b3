//! Generators of the building blocks the resource generators share: names, hosts, labels,
//! metadata, ports, durations, percentages, string matches, destinations, headers, weights.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use trellis_api::resources::*;

pub fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?"
}

pub fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        label(),
        (label(), label()).prop_map(|(a, b)| format!("{a}.{b}.svc.cluster.local")),
        label().prop_map(|a| format!("*.{a}.com")),
    ]
}

pub fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[a-z]{1,6}", "[a-z0-9]{0,6}", 0..3)
}

pub fn meta() -> impl Strategy<Value = ObjectMeta> {
    (label(), label(), labels()).prop_map(|(name, namespace, labels)| ObjectMeta {
        name,
        namespace: Some(namespace),
        labels,
        annotations: BTreeMap::new(),
    })
}

pub fn port() -> impl Strategy<Value = u32> {
    1u32..=65535
}

/// Durations of at least 1ms, in several spellings.
pub fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u32..5000).prop_map(|n| format!("{n}ms")),
        (1u32..600).prop_map(|n| format!("{n}s")),
        (1u32..60, 1u32..10).prop_map(|(s, t)| format!("{s}.{t}s")),
        (1u32..90).prop_map(|n| format!("{n}m")),
        (1u32..3, 1u32..59).prop_map(|(h, m)| format!("{h}h{m}m")),
    ]
    .prop_map(|text| Duration::parse(&text).unwrap_or_else(|e| panic!("{e}")))
}

/// Percentages with one decimal, which survive a trip through decimal text exactly.
pub fn percent() -> impl Strategy<Value = Percent> {
    (0u32..=1000).prop_map(|tenths| Percent {
        value: f64::from(tenths) / 10.0,
    })
}

pub fn string_match() -> impl Strategy<Value = StringMatch> {
    prop_oneof![
        "/[a-z]{0,6}".prop_map(StringMatch::Exact),
        "/[a-z]{0,6}".prop_map(StringMatch::Prefix),
        "\\^/[a-z]{1,4}(/v[0-9])?\\$".prop_map(StringMatch::Regex),
    ]
}

pub fn header_value_match() -> impl Strategy<Value = HeaderValueMatch> {
    prop_oneof![
        Just(HeaderValueMatch::Present),
        string_match().prop_map(HeaderValueMatch::Value),
    ]
}

pub fn destination() -> impl Strategy<Value = Destination> {
    (host(), option::of(label()), option::of(port())).prop_map(|(host, subset, port)| Destination {
        host,
        subset,
        port: port.map(|number| PortSelector { number }),
    })
}

pub fn headers() -> impl Strategy<Value = Headers> {
    let ops = (
        btree_map("x-[a-z]{1,5}", "[a-z]{0,5}", 0..2),
        btree_map("x-[a-z]{1,5}", "[a-z]{0,5}", 0..2),
        vec("x-[a-z]{1,5}", 0..2),
    )
        .prop_map(|(set, add, remove)| HeaderOperations { set, add, remove });
    (option::of(ops.clone()), option::of(ops))
        .prop_map(|(request, response)| Headers { request, response })
}

/// Weights for `n` destinations: any (or none) for one, adding up to 100 for several.
pub fn weights(n: usize) -> BoxedStrategy<Vec<Option<i32>>> {
    if n == 1 {
        return option::of(0i32..=100).prop_map(|w| vec![w]).boxed();
    }
    vec(0i32..=100, n - 1)
        .prop_map(move |mut cuts| {
            cuts.sort_unstable();
            let mut out = Vec::with_capacity(n);
            let mut last = 0;
            for cut in cuts {
                out.push(Some(cut - last));
                last = cut;
            }
            out.push(Some(100 - last));
            out
        })
        .boxed()
}
