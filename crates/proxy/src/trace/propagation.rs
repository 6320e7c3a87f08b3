//! Reading and writing trace context headers: W3C Trace Context (`traceparent`,
//! `tracestate`) and Zipkin's B3, single-header (`b3`) and multi-header (`x-b3-*`).
//!
//! Parsing follows the W3C rules: a `traceparent` that is malformed, uses uppercase hex, has
//! an all-zero id or version `ff`, or comes twice, is ignored as if absent (and its
//! `tracestate` with it); a future version is read by its first 55 characters. A malformed
//! `tracestate` is dropped alone. B3 is read the way OpenTelemetry's B3 propagator reads it: a
//! 64-bit trace id is left-padded to 128 bits, `d` (debug) means sampled, and a missing
//! sampling state (B3's "defer") counts as not sampled. A B3 header that carries only a
//! sampling state (`b3: 0`) has no ids to join, so it yields no context.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{hex, parse_hex, TraceContext};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// `00-` + 32 + `-` + 16 + `-` + 2: the version 00 form, and the prefix later versions keep.
const TRACEPARENT_LEN: usize = 55;

/// The spec's limit on `tracestate` list members.
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Reads the caller's trace context: W3C `traceparent` (with `tracestate`) first, else B3
/// single-header `b3`, else B3 multi-header `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`
/// (and `x-b3-flags`). None when no header gives a usable context.
pub fn extract(headers: &HeaderMap) -> Option<TraceContext> {
    extract_w3c(headers)
        .or_else(|| extract_b3_single(headers))
        .or_else(|| extract_b3_multi(headers))
}

/// Writes `ctx` as the next hop's context: `traceparent` always, `tracestate` when `ctx`
/// has one (an old one is removed otherwise: it belonged to a trace that was not joined).
/// B3 headers already in `headers` (the app's own) are rewritten in the form they came in,
/// so apps that only speak B3 stay in the trace.
pub fn inject(headers: &mut HeaderMap, ctx: &TraceContext) {
    let mut tp = [0u8; TRACEPARENT_LEN];
    tp[..3].copy_from_slice(b"00-");
    tp[3..35].copy_from_slice(hex(&ctx.trace_id).as_bytes());
    tp[35] = b'-';
    tp[36..52].copy_from_slice(hex(&ctx.span_id).as_bytes());
    tp[52..].copy_from_slice(if ctx.sampled { b"-01" } else { b"-00" });
    // Hex digits and dashes are always a valid header value.
    if let Ok(v) = HeaderValue::from_bytes(&tp) {
        headers.insert(TRACEPARENT, v);
    }
    match &ctx.tracestate {
        Some(ts) => {
            headers.insert(TRACESTATE, ts.clone());
        }
        None => {
            headers.remove(TRACESTATE);
        }
    }
    if headers.contains_key(B3) {
        rewrite_b3_single(headers, ctx);
    }
    if headers.contains_key(X_B3_TRACEID) || headers.contains_key(X_B3_SPANID) {
        rewrite_b3_multi(headers, ctx);
    }
}

// === W3C Trace Context ===

fn extract_w3c(headers: &HeaderMap) -> Option<TraceContext> {
    let mut all = headers.get_all(TRACEPARENT).iter();
    let value = all.next()?;
    if all.next().is_some() {
        // Two parents: no way to tell which is right, so the W3C rule is to start afresh.
        return None;
    }
    let (trace_id, span_id, sampled) = parse_traceparent(value.as_bytes())?;
    Some(TraceContext {
        trace_id,
        span_id,
        sampled,
        tracestate: tracestate(headers),
    })
}

/// `VERSION-TRACEID-PARENTID-FLAGS`; only the sampled bit of the flags means anything here.
fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    let v = trim_ows(v);
    if v.len() < TRACEPARENT_LEN {
        return None;
    }
    let [version] = parse_hex::<1>(&v[..2])?;
    // Version 00 has exactly this length; a later version may append fields after a dash,
    // and a reader that knows only 00 reads the prefix (ff is reserved as invalid).
    match version {
        0xff => return None,
        0x00 if v.len() != TRACEPARENT_LEN => return None,
        _ if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = parse_hex::<16>(&v[3..35]).filter(nonzero)?;
    let span_id = parse_hex::<8>(&v[36..52]).filter(nonzero)?;
    let [flags] = parse_hex::<1>(&v[53..55])?;
    Some((trace_id, span_id, flags & 0x01 != 0))
}

/// The `tracestate` to carry, or None when absent, empty or malformed. Several header lines
/// form one list (RFC 9110 field combination).
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all(TRACESTATE).iter();
    let first = all.next()?;
    let combined = match all.next() {
        None => first.clone(),
        Some(second) => {
            let mut joined = first.as_bytes().to_vec();
            for v in std::iter::once(second).chain(all) {
                joined.push(b',');
                joined.extend_from_slice(v.as_bytes());
            }
            HeaderValue::from_bytes(&joined).ok()?
        }
    };
    valid_tracestate(combined.as_bytes()).then_some(combined)
}

/// `key=value` list members, comma-separated: at most 32, keys unique, both parts in the
/// W3C character sets. Empty members are allowed.
fn valid_tracestate(v: &[u8]) -> bool {
    let members = || {
        v.split(|c| *c == b',')
            .map(trim_ows)
            .filter(|m| !m.is_empty())
    };
    let mut count = 0;
    for (i, member) in members().enumerate() {
        count += 1;
        let Some(eq) = member.iter().position(|c| *c == b'=') else {
            return false;
        };
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if count > TRACESTATE_MAX_MEMBERS || !valid_key(key) || !valid_value(value) {
            return false;
        }
        let duplicate = members()
            .take(i)
            .any(|m| m.split(|c| *c == b'=').next() == Some(key));
        if duplicate {
            return false;
        }
    }
    count > 0
}

fn valid_key(key: &[u8]) -> bool {
    let rest_ok = |s: &[u8]| {
        s.iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match key.iter().position(|c| *c == b'@') {
        // tenant@system
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            matches!(tenant.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
                && tenant.len() <= 241
                && rest_ok(tenant)
                && matches!(system.first(), Some(b'a'..=b'z'))
                && system.len() <= 14
                && rest_ok(system)
        }
        None => matches!(key.first(), Some(b'a'..=b'z')) && key.len() <= 256 && rest_ok(key),
    }
}

fn valid_value(value: &[u8]) -> bool {
    let printable = |c: &u8| matches!(c, 0x20..=0x7e) && *c != b',' && *c != b'=';
    !value.is_empty()
        && value.len() <= 256
        && value.iter().all(printable)
        && value.last() != Some(&b' ')
}

// === B3 ===

fn extract_b3_single(headers: &HeaderMap) -> Option<TraceContext> {
    let b3 = parse_b3_single(headers.get(B3)?.as_bytes())?;
    Some(TraceContext {
        trace_id: b3.trace_id,
        span_id: b3.span_id,
        sampled: matches!(b3.sampling, Sampling::Accept | Sampling::Debug),
        tracestate: None,
    })
}

fn extract_b3_multi(headers: &HeaderMap) -> Option<TraceContext> {
    let trace_id = b3_trace_id(trim_ows(headers.get(X_B3_TRACEID)?.as_bytes()))?.0;
    let span_id = parse_hex::<8>(trim_ows(headers.get(X_B3_SPANID)?.as_bytes())).filter(nonzero)?;
    Some(TraceContext {
        trace_id,
        span_id,
        sampled: matches!(
            b3_multi_sampling(headers),
            Sampling::Accept | Sampling::Debug
        ),
        tracestate: None,
    })
}

/// A B3 sampling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// `1` (`true` in old multi-header senders).
    Accept,
    /// `0`.
    Deny,
    /// `d` / `x-b3-flags: 1`: sampled, and forced through downstream samplers.
    Debug,
    /// Absent: the receiver decides.
    Defer,
}

/// A parsed `b3` header with ids.
struct B3Single {
    trace_id: [u8; 16],
    /// True when the trace id was sent as 16 hex digits.
    short: bool,
    span_id: [u8; 8],
    sampling: Sampling,
}

/// `TRACEID-SPANID[-SAMPLING[-PARENTSPANID]]`. A header with only a sampling state is None.
fn parse_b3_single(v: &[u8]) -> Option<B3Single> {
    let mut parts = trim_ows(v).split(|c| *c == b'-');
    let (trace_id, short) = b3_trace_id(parts.next()?)?;
    let span_id = parse_hex::<8>(parts.next()?).filter(nonzero)?;
    let sampling = match parts.next() {
        None => Sampling::Defer,
        Some(b"1") => Sampling::Accept,
        Some(b"0") => Sampling::Deny,
        Some(b"d") => Sampling::Debug,
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        parse_hex::<8>(parent).filter(nonzero)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(B3Single {
        trace_id,
        short,
        span_id,
        sampling,
    })
}

/// A B3 trace id of 32 or 16 hex digits; a 64-bit one is left-padded with zeros to 128 bits
/// (the second value says it was short).
fn b3_trace_id(s: &[u8]) -> Option<([u8; 16], bool)> {
    if s.len() == 16 {
        let low = parse_hex::<8>(s).filter(nonzero)?;
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&low);
        Some((id, true))
    } else {
        Some((parse_hex::<16>(s).filter(nonzero)?, false))
    }
}

fn b3_multi_sampling(headers: &HeaderMap) -> Sampling {
    if headers.get(X_B3_FLAGS).map(|v| trim_ows(v.as_bytes())) == Some(b"1") {
        return Sampling::Debug;
    }
    match headers.get(X_B3_SAMPLED).map(|v| trim_ows(v.as_bytes())) {
        None => Sampling::Defer,
        Some(b"1" | b"true") => Sampling::Accept,
        // Anything else is a "no" rather than an error, as OpenTelemetry reads it.
        Some(_) => Sampling::Deny,
    }
}

/// The sampling state to send on: `ctx` decides, but a debug or deferred request stays so
/// where `ctx` agrees (a deferred request that the proxy did not sample stays deferred).
fn next_sampling(came: Sampling, ctx: &TraceContext) -> Sampling {
    match (came, ctx.sampled) {
        (Sampling::Debug, true) => Sampling::Debug,
        (Sampling::Defer, false) => Sampling::Defer,
        (_, true) => Sampling::Accept,
        (_, false) => Sampling::Deny,
    }
}

/// The B3 trace id to write: 16 digits when the app sent 16 and the id still fits.
fn b3_trace_hex(ctx: &TraceContext, short: bool) -> String {
    if short && ctx.trace_id[..8].iter().all(|b| *b == 0) {
        hex(&ctx.trace_id[8..])
    } else {
        hex(&ctx.trace_id)
    }
}

/// The span the app's B3 headers named is the parent of `ctx`'s span when the trace is the
/// same one (it is whenever `ctx` was derived from them).
fn b3_parent(came_trace: [u8; 16], came_span: [u8; 8], ctx: &TraceContext) -> Option<String> {
    (came_trace == ctx.trace_id && came_span != ctx.span_id).then(|| hex(&came_span))
}

fn rewrite_b3_single(headers: &mut HeaderMap, ctx: &TraceContext) {
    let Some(came) = headers.get(B3).map(|v| v.as_bytes()) else {
        return;
    };
    // A sampling-only header (`b3: 0`) has no ids to rewrite; it is left as the app's say.
    if !came.contains(&b'-') {
        return;
    }
    let (short, sampling, parent) = match parse_b3_single(came) {
        Some(b3) => (
            b3.short,
            next_sampling(b3.sampling, ctx),
            b3_parent(b3.trace_id, b3.span_id, ctx),
        ),
        None => (false, next_sampling(Sampling::Deny, ctx), None),
    };
    let mut v = format!("{}-{}", b3_trace_hex(ctx, short), hex(&ctx.span_id));
    let state = match sampling {
        Sampling::Accept => Some("1"),
        Sampling::Deny => Some("0"),
        Sampling::Debug => Some("d"),
        Sampling::Defer => None,
    };
    // The parent field can only follow a sampling state.
    if let Some(state) = state {
        v.push('-');
        v.push_str(state);
        if let Some(parent) = parent {
            v.push('-');
            v.push_str(&parent);
        }
    }
    if let Ok(v) = HeaderValue::try_from(v) {
        headers.insert(B3, v);
    }
}

fn rewrite_b3_multi(headers: &mut HeaderMap, ctx: &TraceContext) {
    let came_trace = headers
        .get(X_B3_TRACEID)
        .and_then(|v| b3_trace_id(trim_ows(v.as_bytes())));
    let came_span = headers
        .get(X_B3_SPANID)
        .and_then(|v| parse_hex::<8>(trim_ows(v.as_bytes())));
    let short = came_trace.is_some_and(|(_, short)| short);
    let parent = match (came_trace, came_span) {
        (Some((trace, _)), Some(span)) => b3_parent(trace, span, ctx),
        _ => None,
    };
    let sampling = next_sampling(b3_multi_sampling(headers), ctx);

    let mut set = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(name, v);
        }
    };
    set(X_B3_TRACEID, b3_trace_hex(ctx, short));
    set(X_B3_SPANID, hex(&ctx.span_id));
    match parent {
        Some(p) => set(X_B3_PARENTSPANID, p),
        None => {
            headers.remove(X_B3_PARENTSPANID);
        }
    }
    // Debug implies sampled, and B3 says not to send both.
    match sampling {
        Sampling::Debug => {
            headers.remove(X_B3_SAMPLED);
            headers.insert(X_B3_FLAGS, HeaderValue::from_static("1"));
        }
        Sampling::Defer => {
            headers.remove(X_B3_SAMPLED);
            headers.remove(X_B3_FLAGS);
        }
        Sampling::Accept | Sampling::Deny => {
            let s = if sampling == Sampling::Accept {
                "1"
            } else {
                "0"
            };
            headers.insert(X_B3_SAMPLED, HeaderValue::from_static(s));
            headers.remove(X_B3_FLAGS);
        }
    }
}

// === helpers ===

fn nonzero<const N: usize>(id: &[u8; N]) -> bool {
    id.iter().any(|b| *b != 0)
}

/// Strips optional whitespace (spaces and tabs) around a header value or list member.
fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = v.iter().position(|c| !is_ows(c)).unwrap_or(v.len());
    let end = v.iter().rposition(|c| !is_ows(c)).map_or(start, |i| i + 1);
    &v[start..end]
}
