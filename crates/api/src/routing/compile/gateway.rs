//! Gateway API routes attached to one Service port, as model rules ranked by the spec's
//! precedence. Schema defaults were applied by the loader (a match without a path is a
//! prefix `/`, a backend weight is 1, a redirect status 302); the mesh's own defaults are
//! applied here (Istio's retry policy, a 500 for a rule with nowhere to send a request).

use std::cmp::Reverse;

use super::{warn, Attachment, Context, GatewayRoute};
use crate::load::{Diagnostic, Located};
use crate::resources::gateway::{
    GrpcMethodMatch, GrpcRouteFilter, GrpcRouteFilterType, GrpcRouteMatch, GrpcRouteRule,
    HeaderMatch as GatewayHeaderMatch, HeaderMatchType, HeaderModifier, HttpRouteFilter,
    HttpRouteFilterType, HttpRouteMatch, HttpRouteRule, PathMatchType, PathModifier,
    PathModifierType, RedirectScheme, RedirectStatusCode, RequestMirror, RequestRedirect, TcpRoute,
    UrlRewrite, DEFAULT_DENOMINATOR,
};
use crate::resources::Resource;
use crate::routing::header::{HeaderKey, HeaderText};
use crate::routing::model::{
    Action, Backend, DirectResponse, Filters, HeaderMatch, HeaderOps, HeaderPair, HttpRoutes,
    HttpRule, MatchEntry, Mirror, PathMatch, PathRewrite, QueryMatch, Redirect, RedirectPort,
    RequestMatch, RetryPolicy, Rewrite, RouteKind, RuleName, StrMatch, TcpRoutes, TcpRule,
    ValueMatch, WeightedDestination,
};
use crate::routing::pattern::{Pattern, PatternError};

/// The status for a request whose rule has no backend to send it to, or picked one that is
/// not valid: the Gateway API requires 500.
const NO_BACKEND_STATUS: u16 = 500;

/// Where a match stands in the port's order: strongest first, then the tie-breakers.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'a> {
    /// GRPCRoute matches (0) before HTTPRoute ones (1): a port serving both is a gRPC port,
    /// and gRPC's criteria and HTTP's cannot be compared.
    family: u8,
    /// The spec's criteria, compared in order, larger first.
    strength: Reverse<[usize; 5]>,
    /// Load order, standing for age: older first.
    order: usize,
    namespace: &'a str,
    name: &'a str,
    rule: usize,
    match_index: usize,
}

impl<'a> Rank<'a> {
    fn new(
        family: u8,
        strength: [usize; 5],
        located: &'a Located<Resource>,
        order: usize,
        rule: usize,
        match_index: usize,
    ) -> Self {
        Rank {
            family,
            strength: Reverse(strength),
            order,
            namespace: located.value.namespace(),
            name: located.value.name(),
            rule,
            match_index,
        }
    }
}

/// The HTTP rules of the HTTPRoutes and GRPCRoutes attached to a port, ranked; `None` when
/// none is attached.
pub(super) fn http_routes(
    attached: &[&Attachment<'_>],
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<HttpRoutes> {
    let mut rules = Vec::new();
    let mut ranked: Vec<(Rank<'_>, MatchEntry)> = Vec::new();
    let mut any = false;
    for a in attached {
        match a.route {
            GatewayRoute::Http(route) => {
                any = true;
                for (ri, rule) in route.spec.rules.iter().enumerate() {
                    let index = rules.len();
                    rules.push(http_rule(ri, rule, a.located, ctx, warnings));
                    for (mi, m) in rule.matches.iter().enumerate() {
                        // A match whose regex does not compile never matches; the loader
                        // says so ([`crate::routing::unsupported`]).
                        if let Some(conditions) = http_match(m) {
                            let strength = http_strength(m);
                            let rank = Rank::new(1, strength, a.located, a.order, ri, mi);
                            ranked.push((
                                rank,
                                MatchEntry {
                                    rule: index,
                                    conditions,
                                },
                            ));
                        }
                    }
                }
            }
            GatewayRoute::Grpc(route) => {
                any = true;
                for (ri, rule) in route.spec.rules.iter().enumerate() {
                    let index = rules.len();
                    rules.push(grpc_rule(ri, rule, a.located, ctx, warnings));
                    // A rule without matches matches every call.
                    let every = [GrpcRouteMatch::default()];
                    let matches = if rule.matches.is_empty() {
                        &every[..]
                    } else {
                        &rule.matches[..]
                    };
                    for (mi, m) in matches.iter().enumerate() {
                        if let Some(conditions) = grpc_match(m) {
                            let strength = grpc_strength(m);
                            let rank = Rank::new(0, strength, a.located, a.order, ri, mi);
                            ranked.push((
                                rank,
                                MatchEntry {
                                    rule: index,
                                    conditions,
                                },
                            ));
                        }
                    }
                }
            }
            GatewayRoute::Tcp(_) => {}
        }
    }
    if !any {
        return None;
    }
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    Some(HttpRoutes {
        matches: ranked.into_iter().map(|(_, entry)| entry).collect(),
        rules,
    })
}

/// The TCPRoutes attached to a port, oldest first (they have no matches, so the oldest
/// takes every connection); `None` when none is.
pub(super) fn tcp_routes(
    attached: &[&Attachment<'_>],
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<TcpRoutes> {
    let rules: Vec<TcpRule> = attached
        .iter()
        .filter_map(|a| match a.route {
            GatewayRoute::Tcp(route) => Some(tcp_rule(route, a.located, ctx, warnings)),
            _ => None,
        })
        .collect();
    (!rules.is_empty()).then_some(TcpRoutes { rules })
}

// === precedence ===

/// Exact path, then the longest prefix (a regular expression ranks below any prefix, as in
/// Istio), then a method, then the number of header and query parameter matches.
fn http_strength(m: &HttpRouteMatch) -> [usize; 5] {
    let (kind, len) = match &m.path {
        Some(path) => {
            let kind = match path.match_type() {
                PathMatchType::Exact => 3,
                PathMatchType::PathPrefix => 2,
                PathMatchType::RegularExpression => 1,
            };
            (kind, path.value().chars().count())
        }
        None => (0, 0),
    };
    [
        kind,
        len,
        usize::from(m.method.is_some()),
        m.headers.len(),
        m.query_params.len(),
    ]
}

/// The length of the service, then of the method, then the number of header matches.
fn grpc_strength(m: &GrpcRouteMatch) -> [usize; 5] {
    let len = |s: &Option<String>| s.as_deref().map_or(0, |s| s.chars().count());
    let (service, method) = m
        .method
        .as_ref()
        .map_or((0, 0), |mm| (len(&mm.service), len(&mm.method)));
    [service, method, m.headers.len(), 0, 0]
}

// === matches ===

/// An HTTPRoute match as conditions; `None` when a regular expression does not compile.
fn http_match(m: &HttpRouteMatch) -> Option<RequestMatch> {
    let path = match &m.path {
        None => None,
        Some(path) => Some(match path.match_type() {
            PathMatchType::Exact => PathMatch::Exact {
                value: path.value().to_owned(),
                ignore_case: false,
            },
            PathMatchType::PathPrefix => PathMatch::Segments {
                value: path.value().trim_end_matches('/').to_owned(),
            },
            PathMatchType::RegularExpression => PathMatch::Regex {
                pattern: Pattern::new(path.value()).ok()?,
            },
        }),
    };
    let query_params = m
        .query_params
        .iter()
        .map(|q| {
            Some(QueryMatch {
                name: q.name.clone(),
                condition: value_match(q.type_, &q.value)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(RequestMatch {
        path,
        method: m
            .method
            .map(|method| StrMatch::Exact(method.as_str().to_owned())),
        headers: header_matches(&m.headers)?,
        query_params,
        ..RequestMatch::default()
    })
}

/// A GRPCRoute match as conditions on the `/service/method` path and the metadata; `None`
/// when a regular expression does not compile.
fn grpc_match(m: &GrpcRouteMatch) -> Option<RequestMatch> {
    let path = match &m.method {
        Some(method) => grpc_method_path(method).ok()?,
        None => None,
    };
    Some(RequestMatch {
        path,
        headers: header_matches(&m.headers)?,
        ..RequestMatch::default()
    })
}

/// A gRPC service and method condition as a path condition on `/service/method`: both
/// exact is an exact path, a service alone a prefix `/service/`, a method alone (or any
/// regular expression) a regex over the path. `None` when neither is set (which validation
/// refuses).
///
/// # Errors
///
/// A regular expression that does not compile.
pub(crate) fn grpc_method_path(m: &GrpcMethodMatch) -> Result<Option<PathMatch>, PatternError> {
    // gRPC paths carry the service without the leading `.` a fully qualified protobuf name
    // may be written with.
    let service = m
        .service
        .as_deref()
        .map(|s| s.strip_prefix('.').unwrap_or(s));
    let method = m.method.as_deref();
    let any = "[^/]+";
    let path = match (m.type_.unwrap_or_default(), service, method) {
        (_, None, None) => return Ok(None),
        (HeaderMatchType::Exact, Some(s), Some(m)) => PathMatch::Exact {
            value: format!("/{s}/{m}"),
            ignore_case: false,
        },
        (HeaderMatchType::Exact, Some(s), None) => PathMatch::Prefix {
            value: format!("/{s}/"),
            ignore_case: false,
        },
        (HeaderMatchType::Exact, None, Some(m)) => PathMatch::Regex {
            pattern: Pattern::new(&format!("/{any}/{}", regex::escape(m)))?,
        },
        (HeaderMatchType::RegularExpression, s, m) => PathMatch::Regex {
            pattern: Pattern::new(&format!(
                "/(?:{})/(?:{})",
                s.unwrap_or(any),
                m.unwrap_or(any)
            ))?,
        },
    };
    Ok(Some(path))
}

/// Header matches as conditions; `None` when a name or regex is refused.
fn header_matches(headers: &[GatewayHeaderMatch]) -> Option<Vec<HeaderMatch>> {
    headers
        .iter()
        .map(|h| {
            Some(HeaderMatch {
                name: HeaderKey::new(&h.name).ok()?,
                condition: value_match(h.type_, &h.value)?,
                invert: false,
            })
        })
        .collect()
}

fn value_match(type_: Option<HeaderMatchType>, value: &str) -> Option<ValueMatch> {
    Some(match type_.unwrap_or_default() {
        HeaderMatchType::Exact => ValueMatch::Exact(value.to_owned()),
        HeaderMatchType::RegularExpression => ValueMatch::Regex(Pattern::new(value).ok()?),
    })
}

// === rules ===

/// What the route kinds' filters share: the header modifiers and the mirror.
trait SharedFilter {
    fn request_modifier(&self) -> Option<&HeaderModifier>;
    fn response_modifier(&self) -> Option<&HeaderModifier>;
    fn mirror(&self) -> Option<&RequestMirror>;
}

impl SharedFilter for HttpRouteFilter {
    fn request_modifier(&self) -> Option<&HeaderModifier> {
        (self.type_ == HttpRouteFilterType::RequestHeaderModifier)
            .then_some(self.request_header_modifier.as_ref())
            .flatten()
    }
    fn response_modifier(&self) -> Option<&HeaderModifier> {
        (self.type_ == HttpRouteFilterType::ResponseHeaderModifier)
            .then_some(self.response_header_modifier.as_ref())
            .flatten()
    }
    fn mirror(&self) -> Option<&RequestMirror> {
        (self.type_ == HttpRouteFilterType::RequestMirror)
            .then_some(self.request_mirror.as_ref())
            .flatten()
    }
}

impl SharedFilter for GrpcRouteFilter {
    fn request_modifier(&self) -> Option<&HeaderModifier> {
        (self.type_ == GrpcRouteFilterType::RequestHeaderModifier)
            .then_some(self.request_header_modifier.as_ref())
            .flatten()
    }
    fn response_modifier(&self) -> Option<&HeaderModifier> {
        (self.type_ == GrpcRouteFilterType::ResponseHeaderModifier)
            .then_some(self.response_header_modifier.as_ref())
            .flatten()
    }
    fn mirror(&self) -> Option<&RequestMirror> {
        (self.type_ == GrpcRouteFilterType::RequestMirror)
            .then_some(self.request_mirror.as_ref())
            .flatten()
    }
}

/// The parts of a rule both kinds share, borrowed.
struct RuleParts<'a, F> {
    located: &'a Located<Resource>,
    kind: RouteKind,
    index: usize,
    name: Option<&'a str>,
    filters: &'a [F],
    backends: &'a [crate::resources::gateway::FilteredBackendRef<F>],
}

impl<F: SharedFilter> RuleParts<'_, F> {
    fn rule_name(&self) -> RuleName {
        RuleName {
            kind: self.kind,
            namespace: self.located.value.namespace().to_owned(),
            name: self.located.value.name().to_owned(),
            rule: self
                .name
                .map_or_else(|| self.index.to_string(), str::to_owned),
        }
    }

    /// Header modifiers and mirrors of the rule; the mesh's default retries.
    fn shared_filters(&self, ctx: &Context<'_>, warnings: &mut Vec<Diagnostic>) -> Filters {
        let mut filters = Filters {
            retries: Some(RetryPolicy::mesh_default()),
            ..Filters::default()
        };
        for (j, filter) in self.filters.iter().enumerate() {
            if let Some(m) = filter.request_modifier() {
                filters.request_headers = header_ops(m);
            }
            if let Some(m) = filter.response_modifier() {
                filters.response_headers = header_ops(m);
            }
            if let Some(m) = filter.mirror() {
                let field = format!("spec.rules[{}].filters[{j}].requestMirror", self.index);
                if let Some(mirror) = mirror(m, self.located, ctx, field, warnings) {
                    filters.mirrors.push(mirror);
                }
            }
        }
        filters
    }

    /// Forward to the backends by weight, each with its own header modifiers; a 500 when
    /// none has a positive weight.
    fn forward(&self, ctx: &Context<'_>, warnings: &mut Vec<Diagnostic>) -> Action {
        let route_ns = self.located.value.namespace();
        let mut destinations = Vec::new();
        for (k, b) in self.backends.iter().enumerate() {
            let weight = u32::try_from(b.weight()).unwrap_or(0);
            if weight == 0 {
                continue;
            }
            let target = BackendTarget {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: &b.name,
                namespace: b.namespace.as_deref().unwrap_or(route_ns),
                port: b.port,
            };
            let backend = target.resolve(ctx, self.located, |message| {
                let field = format!("spec.rules[{}].backendRefs[{k}]", self.index);
                warn(warnings, self.located, Some(field), message);
            });
            let mut request_headers = HeaderOps::default();
            let mut response_headers = HeaderOps::default();
            for filter in &b.filters {
                if let Some(m) = filter.request_modifier() {
                    request_headers = header_ops(m);
                }
                if let Some(m) = filter.response_modifier() {
                    response_headers = header_ops(m);
                }
            }
            destinations.push(WeightedDestination {
                weight,
                backend,
                request_headers,
                response_headers,
            });
        }
        if destinations.is_empty() {
            Action::Respond(DirectResponse {
                status: NO_BACKEND_STATUS,
                body: None,
            })
        } else {
            Action::Forward(destinations)
        }
    }
}

fn http_rule(
    index: usize,
    rule: &HttpRouteRule,
    located: &Located<Resource>,
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> HttpRule {
    let parts = RuleParts {
        located,
        kind: RouteKind::HttpRoute,
        index,
        name: rule.name.as_deref(),
        filters: &rule.filters,
        backends: &rule.backend_refs,
    };
    let mut filters = parts.shared_filters(ctx, warnings);
    let mut redirect = None;
    for filter in &rule.filters {
        match filter.type_ {
            HttpRouteFilterType::RequestRedirect => {
                redirect = filter.request_redirect.as_ref().map(to_redirect);
            }
            HttpRouteFilterType::UrlRewrite => {
                filters.rewrite = filter.url_rewrite.as_ref().map(to_rewrite);
            }
            // Header modifiers and mirrors are shared with GRPCRoute; CORS and ExtensionRef
            // filters are not supported, and the loader says so.
            HttpRouteFilterType::RequestHeaderModifier
            | HttpRouteFilterType::ResponseHeaderModifier
            | HttpRouteFilterType::RequestMirror
            | HttpRouteFilterType::Cors
            | HttpRouteFilterType::ExtensionRef => {}
        }
    }
    if let Some(timeouts) = &rule.timeouts {
        filters.timeout = timeouts.request_duration();
        filters.per_try_timeout = timeouts.backend_request_duration();
    }
    let action = match redirect {
        Some(redirect) => {
            // Nothing is forwarded, so nothing is retried or mirrored.
            filters.retries = None;
            filters.mirrors.clear();
            Action::Redirect(redirect)
        }
        None => parts.forward(ctx, warnings),
    };
    if !matches!(action, Action::Forward(_)) {
        filters.retries = None;
    }
    HttpRule {
        name: parts.rule_name(),
        action,
        filters,
    }
}

fn grpc_rule(
    index: usize,
    rule: &GrpcRouteRule,
    located: &Located<Resource>,
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> HttpRule {
    let parts = RuleParts {
        located,
        kind: RouteKind::GrpcRoute,
        index,
        name: rule.name.as_deref(),
        filters: &rule.filters,
        backends: &rule.backend_refs,
    };
    let mut filters = parts.shared_filters(ctx, warnings);
    let action = parts.forward(ctx, warnings);
    if !matches!(action, Action::Forward(_)) {
        filters.retries = None;
    }
    HttpRule {
        name: parts.rule_name(),
        action,
        filters,
    }
}

/// A TCPRoute's first rule (the only one a `v1` TCPRoute may have; later ones of a
/// `v1alpha2` route could never be chosen, and the loader says so). Without a valid
/// backend, the connection goes to an [`Backend::Invalid`] one, which the proxy refuses.
fn tcp_rule(
    route: &TcpRoute,
    located: &Located<Resource>,
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> TcpRule {
    let route_ns = located.value.namespace();
    let rule = route.spec.rules.first();
    let mut destinations = Vec::new();
    for (k, b) in rule
        .map(|r| &r.backend_refs[..])
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let weight = u32::try_from(b.weight()).unwrap_or(0);
        if weight == 0 {
            continue;
        }
        let target = BackendTarget {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref().unwrap_or(route_ns),
            port: b.port,
        };
        let backend = target.resolve(ctx, located, |message| {
            let field = format!("spec.rules[0].backendRefs[{k}]");
            warn(warnings, located, Some(field), message);
        });
        destinations.push(WeightedDestination {
            weight,
            backend,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        });
    }
    if destinations.is_empty() {
        destinations.push(WeightedDestination {
            weight: 1,
            backend: Backend::Invalid {
                reason: "the TCPRoute has no backend with a positive weight".to_owned(),
            },
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        });
    }
    TcpRule {
        name: RuleName {
            kind: RouteKind::TcpRoute,
            namespace: route_ns.to_owned(),
            name: route.meta.name.clone(),
            rule: rule
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| "0".to_owned()),
        },
        matches: Vec::new(),
        destinations,
    }
}

// === parts ===

/// A backendRef's fields, defaulted.
struct BackendTarget<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    name: &'a str,
    namespace: &'a str,
    port: Option<i32>,
}

impl BackendTarget<'_> {
    /// The backend the reference of `route` names. A Service that does not exist, lacks the
    /// port, or is in another namespace without a ReferenceGrant allowing it, is an invalid
    /// backend, and `warn` is told why; another kind is an invalid backend the loader
    /// already reported.
    fn resolve(
        &self,
        ctx: &Context<'_>,
        route: &Located<Resource>,
        warn: impl FnOnce(String),
    ) -> Backend {
        let is_service = matches!(self.group.unwrap_or(""), "" | "core")
            && self.kind.unwrap_or("Service") == "Service";
        if !is_service {
            return Backend::Invalid {
                reason: format!(
                    "backendRef kind {}/{} is not supported",
                    self.group.unwrap_or(""),
                    self.kind.unwrap_or("Service")
                ),
            };
        }
        if !ctx.may_reference(route, self.namespace, self.name) {
            let reason = format!(
                "backendRef Service {}/{} is in another namespace, and no ReferenceGrant there \
                 allows {}s from namespace {}",
                self.namespace,
                self.name,
                route.value.kind(),
                route.value.namespace()
            );
            warn(format!("{reason}: requests sent to it are answered 500"));
            return Backend::Invalid { reason };
        }
        let host = format!("{}.{}.svc.cluster.local", self.name, self.namespace);
        let port = self.port.and_then(|p| u16::try_from(p).ok());
        match port {
            Some(port) if ctx.has_port(&host, port) => Backend::Service {
                host,
                subset: None,
                port: Some(port),
            },
            _ => {
                let what = match self.port {
                    Some(port) => format!("Service {}/{} port {port}", self.namespace, self.name),
                    None => format!("Service {}/{}", self.namespace, self.name),
                };
                let reason = format!("backendRef {what} does not exist");
                warn(format!("{reason}: requests sent to it are answered 500"));
                Backend::Invalid { reason }
            }
        }
    }
}

/// A header modifier as changes. Names and values HTTP refuses are left out (the loader
/// reports them).
fn header_ops(m: &HeaderModifier) -> HeaderOps {
    let pairs = |list: &[crate::resources::gateway::HttpHeader]| {
        list.iter()
            .filter_map(|h| {
                Some(HeaderPair {
                    name: HeaderKey::new(&h.name).ok()?,
                    value: HeaderText::new(&h.value).ok()?,
                })
            })
            .collect()
    };
    HeaderOps {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m
            .remove
            .iter()
            .filter_map(|n| HeaderKey::new(n).ok())
            .collect(),
    }
}

/// A mirror to a Service that exists; the share is `percent`, or `fraction`, or all.
fn mirror(
    m: &RequestMirror,
    located: &Located<Resource>,
    ctx: &Context<'_>,
    field: String,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Mirror> {
    let b = &m.backend_ref;
    let target = BackendTarget {
        group: b.group.as_deref(),
        kind: b.kind.as_deref(),
        name: &b.name,
        namespace: b.namespace.as_deref().unwrap_or(located.value.namespace()),
        port: b.port,
    };
    let Backend::Service { host, port, .. } = target.resolve(ctx, located, |message| {
        warn(warnings, located, Some(field), message);
    }) else {
        return None;
    };
    let percent = match (m.percent, &m.fraction) {
        (Some(p), _) => f64::from(p),
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(DEFAULT_DENOMINATOR).max(1);
            f64::from(f.numerator) * 100.0 / f64::from(denominator)
        }
        (None, None) => 100.0,
    };
    Some(Mirror {
        host,
        subset: None,
        port,
        percent: percent.clamp(0.0, 100.0),
    })
}

fn to_redirect(r: &RequestRedirect) -> Redirect {
    Redirect {
        scheme: r.scheme.map(|s| {
            match s {
                RedirectScheme::Http => "http",
                RedirectScheme::Https => "https",
            }
            .to_owned()
        }),
        host: r.hostname.clone(),
        port: match r.port.and_then(|p| u16::try_from(p).ok()) {
            Some(port) => RedirectPort::Fixed(port),
            None => RedirectPort::Listener,
        },
        path: r.path.as_ref().and_then(path_rewrite),
        status: r.status_code.unwrap_or(RedirectStatusCode::Found).code(),
    }
}

fn to_rewrite(r: &UrlRewrite) -> Rewrite {
    Rewrite {
        path: r.path.as_ref().and_then(path_rewrite),
        authority: r.hostname.clone(),
    }
}

fn path_rewrite(m: &PathModifier) -> Option<PathRewrite> {
    match m.type_ {
        PathModifierType::ReplaceFullPath => m.replace_full_path.clone().map(PathRewrite::Full),
        PathModifierType::ReplacePrefixMatch => {
            m.replace_prefix_match.clone().map(PathRewrite::Prefix)
        }
    }
}
