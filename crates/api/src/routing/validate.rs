//! The checks a route table passes when a snapshot is decoded, beyond what its types already
//! refuse (regexes, header names and values): orderings the matcher relies on, indices,
//! weights, statuses and percentages. A table that fails makes the proxy NACK the snapshot.

use super::model::{
    AbortStatus, Action, Backend, Fault, Filters, HttpRoutes, Mirror, PathMatch, PortRoutes,
    RedirectPort, RouteTable, TcpRoutes, WeightedDestination,
};

/// Why a route table was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RouteTableError {
    /// Ports out of order, repeated, or 0.
    #[error("port {port} is 0, repeated or out of order")]
    PortOrder {
        /// The offending port.
        port: u16,
    },
    /// Consumer namespaces out of order, repeated, or empty.
    #[error("port {port}: consumer namespace {namespace:?} is empty, repeated or out of order")]
    ConsumerOrder {
        /// The port.
        port: u16,
        /// The offending namespace.
        namespace: String,
    },
    /// A match entry pointing past the rules.
    #[error("port {port}: match entry {entry} names rule {rule}, but there are {rules} rules")]
    RuleIndex {
        /// The port.
        port: u16,
        /// The entry's index.
        entry: usize,
        /// The rule it names.
        rule: usize,
        /// How many rules there are.
        rules: usize,
    },
    /// Something wrong with one rule.
    #[error("port {port}: rule {rule}: {problem}")]
    Rule {
        /// The port.
        port: u16,
        /// The rule's name.
        rule: String,
        /// What is wrong.
        problem: RuleProblem,
    },
}

/// What is wrong with a rule.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RuleProblem {
    /// A forward (or TCP rule) without a destination of positive weight.
    #[error("no destination with a positive weight")]
    NoDestination,
    /// A destination of weight 0 (the compiler leaves those out).
    #[error("a destination has weight 0")]
    ZeroWeight,
    /// A status outside what the action allows.
    #[error("{what} {status} is outside {min}..={max}")]
    Status {
        /// Which status ("redirect status").
        what: &'static str,
        /// The status.
        status: u16,
        /// The lowest allowed.
        min: u16,
        /// The highest allowed.
        max: u16,
    },
    /// A share that is not a number in 0..=100.
    #[error("{what} {value} is not a percentage")]
    Percent {
        /// Which share ("mirror percent").
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// A segment prefix held with its trailing `/`.
    #[error("segment prefix {0:?} must not end with '/'")]
    SegmentSlash(String),
    /// Port 0 where a port is named.
    #[error("port 0 in {0}")]
    ZeroPort(&'static str),
    /// A retry policy that retries nothing.
    #[error("a retry policy needs at least one attempt")]
    NoAttempts,
}

impl RouteTable {
    /// Checks what the types cannot: see [`RouteTableError`].
    ///
    /// # Errors
    ///
    /// The first problem found.
    pub fn validate(&self) -> Result<(), RouteTableError> {
        let mut previous = 0;
        for port in &self.ports {
            if port.port <= previous {
                return Err(RouteTableError::PortOrder { port: port.port });
            }
            previous = port.port;
            port.validate()?;
        }
        Ok(())
    }

    /// The routes of `port`, if it has any.
    pub fn port(&self, port: u16) -> Option<&PortRoutes> {
        // Sorted by port (checked on decode), and a Service has few ports: a binary search
        // is as fast as a map and keeps the JSON a plain list.
        self.ports
            .binary_search_by_key(&port, |p| p.port)
            .ok()
            .and_then(|i| self.ports.get(i))
    }

    /// Whether no port has routes.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

impl PortRoutes {
    fn validate(&self) -> Result<(), RouteTableError> {
        let port = self.port;
        let mut previous: Option<&str> = None;
        for consumer in &self.consumers {
            let namespace = consumer.namespace.as_str();
            if namespace.is_empty() || previous.is_some_and(|p| p >= namespace) {
                return Err(RouteTableError::ConsumerOrder {
                    port,
                    namespace: namespace.to_owned(),
                });
            }
            previous = Some(namespace);
        }
        let http = std::iter::once(&self.http).chain(self.consumers.iter().map(|c| &c.http));
        for routes in http.flatten() {
            routes.validate(port)?;
        }
        let tcp = std::iter::once(&self.tcp).chain(self.consumers.iter().map(|c| &c.tcp));
        for routes in tcp.flatten() {
            routes.validate(port)?;
        }
        Ok(())
    }
}

impl HttpRoutes {
    fn validate(&self, port: u16) -> Result<(), RouteTableError> {
        for (entry, m) in self.matches.iter().enumerate() {
            if m.rule >= self.rules.len() {
                return Err(RouteTableError::RuleIndex {
                    port,
                    entry,
                    rule: m.rule,
                    rules: self.rules.len(),
                });
            }
            if let Some(PathMatch::Segments { value }) = &m.conditions.path {
                if value.ends_with('/') {
                    let rule = self.rules.get(m.rule).map(|r| r.name.to_string());
                    let rule = rule.unwrap_or_default();
                    let problem = RuleProblem::SegmentSlash(value.clone());
                    return Err(RouteTableError::Rule {
                        port,
                        rule,
                        problem,
                    });
                }
            }
        }
        for rule in &self.rules {
            let problem = match &rule.action {
                Action::Forward(destinations) => check_destinations(destinations),
                Action::Redirect(redirect) => {
                    check_status("redirect status", redirect.status, 300, 399).or_else(|| {
                        (redirect.port == RedirectPort::Fixed(0))
                            .then_some(RuleProblem::ZeroPort("redirect"))
                    })
                }
                Action::Respond(response) => {
                    check_status("direct response status", response.status, 200, 599)
                }
            }
            .or_else(|| check_filters(&rule.filters));
            if let Some(problem) = problem {
                return Err(RouteTableError::Rule {
                    port,
                    rule: rule.name.to_string(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

impl TcpRoutes {
    fn validate(&self, port: u16) -> Result<(), RouteTableError> {
        for rule in &self.rules {
            if let Some(problem) = check_destinations(&rule.destinations) {
                return Err(RouteTableError::Rule {
                    port,
                    rule: rule.name.to_string(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

fn check_destinations(destinations: &[WeightedDestination]) -> Option<RuleProblem> {
    if destinations.is_empty() {
        return Some(RuleProblem::NoDestination);
    }
    destinations.iter().find_map(|d| {
        if d.weight == 0 {
            Some(RuleProblem::ZeroWeight)
        } else if matches!(d.backend, Backend::Service { port: Some(0), .. }) {
            Some(RuleProblem::ZeroPort("destination"))
        } else {
            None
        }
    })
}

fn check_status(what: &'static str, status: u16, min: u16, max: u16) -> Option<RuleProblem> {
    (!(min..=max).contains(&status)).then_some(RuleProblem::Status {
        what,
        status,
        min,
        max,
    })
}

fn check_percent(what: &'static str, value: f64) -> Option<RuleProblem> {
    // NaN fails the range check too.
    (!(0.0..=100.0).contains(&value)).then_some(RuleProblem::Percent { what, value })
}

fn check_filters(filters: &Filters) -> Option<RuleProblem> {
    let mirrors = filters
        .mirrors
        .iter()
        .find_map(|Mirror { percent, port, .. }| {
            check_percent("mirror percent", *percent)
                .or_else(|| (*port == Some(0)).then_some(RuleProblem::ZeroPort("mirror")))
        });
    let fault = filters.fault.as_ref().and_then(|Fault { delay, abort }| {
        let delay = delay
            .as_ref()
            .and_then(|d| check_percent("delay percent", d.percent));
        let abort = abort.as_ref().and_then(|a| {
            check_percent("abort percent", a.percent).or(match a.status {
                AbortStatus::Http(status) => check_status("abort status", status, 200, 599),
                AbortStatus::Grpc(code) => check_status("abort gRPC status", code, 0, 16),
            })
        });
        delay.or(abort)
    });
    let retries = filters
        .retries
        .as_ref()
        .and_then(|r| (r.attempts == 0).then_some(RuleProblem::NoAttempts));
    mirrors.or(fault).or(retries)
}
