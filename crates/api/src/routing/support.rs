//! What one resource asks for that the route model cannot do, and what the mesh does
//! instead, as notices at the fields concerned. The compilers ([`super::compile`]) skip
//! exactly these parts, so a notice here is the whole story of what was left out.
//!
//! The loader reports these for the Gateway API kinds ([`crate::resources::Resource::notices`]).
//! For VirtualServices it still reports every routing field as not implemented, because the
//! proxy does not route with [`super::select`] yet; once it does, these notices replace that
//! list for `http` and `tcp`.

use crate::resources::gateway::{
    BackendObjectReference, GrpcRouteFilterType, GrpcRouteSpec, HeaderMatchType, HeaderModifier,
    HttpRouteFilterType, HttpRouteSpec, PathMatchType, TcpRoute,
};
use crate::resources::{FieldPath, Notice, NoticeReason, Resource, VirtualServiceSpec};
use crate::routing::header::{HeaderKey, HeaderText};
use crate::routing::pattern::Pattern;

/// The parts of `resource` the route model cannot carry out as written, each with what
/// happens instead. Empty for kinds that are not routes, and for Gateway API routes that
/// attach to no Service (those are not the mesh's).
pub fn unsupported(resource: &Resource) -> Vec<Notice> {
    let mut out = Vec::new();
    let spec = FieldPath::root().field("spec");
    let mesh = |parents: &[crate::resources::gateway::ParentReference]| {
        parents.iter().any(|p| p.is_service())
    };
    match resource {
        Resource::VirtualService(vs) => virtual_service(&vs.spec, &spec, &mut out),
        Resource::HttpRoute(route) if mesh(&route.spec.parent_refs) => {
            http_route(&route.spec, &spec, &mut out);
        }
        Resource::GrpcRoute(route) if mesh(&route.spec.parent_refs) => {
            grpc_route(&route.spec, &spec, &mut out);
        }
        Resource::TcpRoute(route) if mesh(&route.spec.parent_refs) => {
            tcp_route(route, &spec, &mut out);
        }
        _ => {}
    }
    out
}

fn note(
    out: &mut Vec<Notice>,
    path: FieldPath,
    what: impl Into<String>,
    consequence: &'static str,
) {
    out.push(Notice::new(
        path,
        NoticeReason::Routing {
            what: what.into(),
            consequence,
        },
    ));
}

const IGNORED: &str = "not supported by the mesh, ignored";
const NEVER_MATCHES: &str = "this match never matches";

fn virtual_service(spec: &VirtualServiceSpec, at: &FieldPath, out: &mut Vec<Notice>) {
    let mesh = spec.gateways.iter().any(|g| g == "mesh");
    if !spec.gateways.is_empty() && !mesh {
        note(
            out,
            at.field("gateways"),
            "a VirtualService bound only to gateways",
            "not routed by the mesh, which has no ingress gateways",
        );
    }
    for (i, gateway) in spec.gateways.iter().enumerate() {
        if mesh && gateway != "mesh" {
            note(
                out,
                at.field("gateways").index(i),
                format!("gateway {gateway:?}"),
                IGNORED,
            );
        }
    }
    for (i, route) in spec.tls.iter().enumerate() {
        for (j, m) in route.match_.iter().enumerate() {
            if !m.destination_subnets.is_empty() {
                note(
                    out,
                    at.field("tls")
                        .index(i)
                        .field("match")
                        .index(j)
                        .field("destinationSubnets"),
                    "destinationSubnets in a TLS match",
                    "not supported by the mesh: this match never matches",
                );
            }
        }
    }
    for (i, route) in spec.http.iter().enumerate() {
        let at = at.field("http").index(i);
        if route.delegate.is_some() {
            note(
                out,
                at.field("delegate"),
                "delegation to another VirtualService",
                "not supported by the mesh: the route is skipped and the next ones are tried",
            );
        }
        if route.cors_policy.is_some() {
            note(out, at.field("corsPolicy"), "CORS", IGNORED);
        }
        if route
            .retries
            .as_ref()
            .is_some_and(|r| r.retry_remote_localities.is_some())
        {
            let path = at.field("retries").field("retryRemoteLocalities");
            note(out, path, "retrying in other localities", IGNORED);
        }
        for (k, m) in route.match_.iter().enumerate() {
            if m.stat_prefix.is_some() {
                let path = at.field("match").index(k).field("statPrefix");
                note(out, path, "a statistics prefix", IGNORED);
            }
        }
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        for (k, m) in route.match_.iter().enumerate() {
            let at = at.field("tcp").index(i).field("match").index(k);
            for (field, set) in [
                ("destinationSubnets", !m.destination_subnets.is_empty()),
                ("sourceSubnet", m.source_subnet.is_some()),
            ] {
                if set {
                    note(
                        out,
                        at.field(field),
                        format!("{field} in a TCP match"),
                        "not supported by the mesh: this match never matches",
                    );
                }
            }
        }
    }
}

/// Hostnames do not take part in mesh routing (GEP-1426): the Service is the match.
fn hostnames(hostnames: &[String], at: &FieldPath, out: &mut Vec<Notice>) {
    if !hostnames.is_empty() {
        note(
            out,
            at.field("hostnames"),
            "hostnames on a route attached to a Service",
            "not matched: the route applies to every request to the Service",
        );
    }
}

/// A regular expression that does not compile, at `path`.
fn regex(value: &str, path: FieldPath, out: &mut Vec<Notice>) {
    if let Err(e) = Pattern::new(value) {
        note(out, path, e.to_string(), NEVER_MATCHES);
    }
}

/// Header values HTTP refuses (names were checked as tokens by validation).
/// [`modifier`] for a filter's request and response header modifiers, where set.
fn modifiers(
    request: &Option<HeaderModifier>,
    response: &Option<HeaderModifier>,
    at: &FieldPath,
    out: &mut Vec<Notice>,
) {
    for (field, m) in [
        ("requestHeaderModifier", request),
        ("responseHeaderModifier", response),
    ] {
        if let Some(m) = m {
            modifier(m, &at.field(field), out);
        }
    }
}

fn modifier(m: &HeaderModifier, at: &FieldPath, out: &mut Vec<Notice>) {
    for (list, headers) in [("set", &m.set), ("add", &m.add)] {
        for (i, h) in headers.iter().enumerate() {
            if HeaderKey::new(&h.name).is_err() || HeaderText::new(&h.value).is_err() {
                note(
                    out,
                    at.field(list).index(i).field("value"),
                    format!("header value {:?}", h.value),
                    "not a valid HTTP header value, ignored",
                );
            }
        }
    }
}

fn is_service(group: Option<&str>, kind: Option<&str>) -> bool {
    matches!(group.unwrap_or(""), "" | "core") && kind.unwrap_or("Service") == "Service"
}

fn backend_kind(group: Option<&str>, kind: Option<&str>, at: FieldPath, out: &mut Vec<Notice>) {
    if !is_service(group, kind) {
        note(
            out,
            at,
            format!(
                "backendRef to {}/{}",
                group.unwrap_or(""),
                kind.unwrap_or("Service")
            ),
            "not supported by the mesh: requests sent to it are answered 500",
        );
    }
}

fn mirror_kind(b: &BackendObjectReference, at: FieldPath, out: &mut Vec<Notice>) {
    if !is_service(b.group.as_deref(), b.kind.as_deref()) {
        note(
            out,
            at,
            format!(
                "a mirror to {}/{}",
                b.group.as_deref().unwrap_or(""),
                b.kind.as_deref().unwrap_or("Service")
            ),
            IGNORED,
        );
    }
}

fn http_route(spec: &HttpRouteSpec, at: &FieldPath, out: &mut Vec<Notice>) {
    hostnames(&spec.hostnames, at, out);
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = at.field("rules").index(i);
        for (m_index, m) in rule.matches.iter().enumerate() {
            let at = at.field("matches").index(m_index);
            if let Some(path) = &m.path {
                if path.match_type() == PathMatchType::RegularExpression {
                    regex(path.value(), at.field("path").field("value"), out);
                }
            }
            for (h, header) in m.headers.iter().enumerate() {
                if header.type_ == Some(HeaderMatchType::RegularExpression) {
                    regex(
                        &header.value,
                        at.field("headers").index(h).field("value"),
                        out,
                    );
                }
            }
            for (q, param) in m.query_params.iter().enumerate() {
                if param.type_ == Some(HeaderMatchType::RegularExpression) {
                    regex(
                        &param.value,
                        at.field("queryParams").index(q).field("value"),
                        out,
                    );
                }
            }
        }
        for (j, filter) in rule.filters.iter().enumerate() {
            let at = at.field("filters").index(j);
            match filter.type_ {
                HttpRouteFilterType::Cors | HttpRouteFilterType::ExtensionRef => {
                    note(
                        out,
                        at.clone(),
                        format!("the {} filter", filter.type_.name()),
                        IGNORED,
                    );
                }
                HttpRouteFilterType::RequestMirror => {
                    if let Some(mirror) = &filter.request_mirror {
                        mirror_kind(&mirror.backend_ref, at.field("requestMirror"), out);
                    }
                }
                HttpRouteFilterType::RequestHeaderModifier
                | HttpRouteFilterType::ResponseHeaderModifier
                | HttpRouteFilterType::RequestRedirect
                | HttpRouteFilterType::UrlRewrite => {}
            }
            modifiers(
                &filter.request_header_modifier,
                &filter.response_header_modifier,
                &at,
                out,
            );
        }
        for (k, backend) in rule.backend_refs.iter().enumerate() {
            let at = at.field("backendRefs").index(k);
            backend_kind(
                backend.group.as_deref(),
                backend.kind.as_deref(),
                at.clone(),
                out,
            );
            for (j, filter) in backend.filters.iter().enumerate() {
                let at = at.field("filters").index(j);
                match filter.type_ {
                    HttpRouteFilterType::RequestHeaderModifier
                    | HttpRouteFilterType::ResponseHeaderModifier => {}
                    other => note(
                        out,
                        at.clone(),
                        format!("the {} filter on a backendRef", other.name()),
                        IGNORED,
                    ),
                }
                modifiers(
                    &filter.request_header_modifier,
                    &filter.response_header_modifier,
                    &at,
                    out,
                );
            }
        }
    }
}

fn grpc_route(spec: &GrpcRouteSpec, at: &FieldPath, out: &mut Vec<Notice>) {
    hostnames(&spec.hostnames, at, out);
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = at.field("rules").index(i);
        for (m_index, m) in rule.matches.iter().enumerate() {
            let at = at.field("matches").index(m_index);
            if let Some(method) = &m.method {
                if let Err(e) = super::compile::grpc_method_path(method) {
                    note(out, at.field("method"), e.to_string(), NEVER_MATCHES);
                }
            }
            for (h, header) in m.headers.iter().enumerate() {
                if header.type_ == Some(HeaderMatchType::RegularExpression) {
                    regex(
                        &header.value,
                        at.field("headers").index(h).field("value"),
                        out,
                    );
                }
            }
        }
        for (j, filter) in rule.filters.iter().enumerate() {
            let at = at.field("filters").index(j);
            match filter.type_ {
                GrpcRouteFilterType::ExtensionRef => {
                    note(out, at.clone(), "the ExtensionRef filter", IGNORED);
                }
                GrpcRouteFilterType::RequestMirror => {
                    if let Some(mirror) = &filter.request_mirror {
                        mirror_kind(&mirror.backend_ref, at.field("requestMirror"), out);
                    }
                }
                GrpcRouteFilterType::RequestHeaderModifier
                | GrpcRouteFilterType::ResponseHeaderModifier => {}
            }
            modifiers(
                &filter.request_header_modifier,
                &filter.response_header_modifier,
                &at,
                out,
            );
        }
        for (k, backend) in rule.backend_refs.iter().enumerate() {
            let at = at.field("backendRefs").index(k);
            backend_kind(
                backend.group.as_deref(),
                backend.kind.as_deref(),
                at.clone(),
                out,
            );
            for (j, filter) in backend.filters.iter().enumerate() {
                let at = at.field("filters").index(j);
                match filter.type_ {
                    GrpcRouteFilterType::RequestHeaderModifier
                    | GrpcRouteFilterType::ResponseHeaderModifier => {}
                    other => note(
                        out,
                        at.clone(),
                        format!("the {} filter on a backendRef", other.name()),
                        IGNORED,
                    ),
                }
                modifiers(
                    &filter.request_header_modifier,
                    &filter.response_header_modifier,
                    &at,
                    out,
                );
            }
        }
    }
}

fn tcp_route(route: &TcpRoute, at: &FieldPath, out: &mut Vec<Notice>) {
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let at = at.field("rules").index(i);
        if i > 0 {
            note(
                out,
                at.clone(),
                "a second TCPRoute rule",
                "never used: TCP has nothing to match on, so the first rule takes every connection",
            );
        }
        for (k, backend) in rule.backend_refs.iter().enumerate() {
            let at = at.field("backendRefs").index(k);
            backend_kind(backend.group.as_deref(), backend.kind.as_deref(), at, out);
        }
    }
}

#[cfg(test)]
mod tests;
