//! `trellis up --netns`: every workload in a network namespace of its own, with a proxy that
//! captures its traffic, as a sidecar would in a Kubernetes pod.
//!
//! The order matters and is the point of this mode:
//!
//! 1. the [`Network`]: bridge namespace, host cable, one namespace per workload;
//! 2. the control plane, in the bridge namespace on the bridge's address;
//! 3. `/etc/netns/NS/hosts` for every workload, from the control plane's own list of service
//!    virtual IPs (`/api/v1/status`), so names resolve to exactly the addresses the proxies
//!    route by;
//! 4. every proxy (`--mode transparent --capture`) in its namespace;
//! 5. each app, in its proxy's namespace, only once that proxy's `/healthz/ready` answers
//!    (certificate, snapshot and capture rules in place): the app's first connection is
//!    already captured and can already be served;
//! 6. the front door, in the host's namespace, reaching the workloads over the host's cable;
//! 7. "mesh is up" once every proxy has ACKed the latest snapshot, which by then places every
//!    workload at its namespace's address.
//!
//! While the mesh runs the hosts files follow the control plane's services (a Service added
//! to DIR becomes resolvable within a few seconds).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use trellis_identity::TokenStore;

use super::network::{command_in, Network, Subnet};
use super::supervise::{Children, MakeCommand, POLL};
use super::{
    announce, app_command, print_tries, proxy_command, ready, spawn_front, start_control,
    telemetry_flags, wait_for, wait_until, Ctx, Workload,
};
use crate::local_mesh::MeshRecord;

/// How often the hosts files are checked against the control plane's services.
const HOSTS_REFRESH: Duration = Duration::from_secs(2);

/// A service as resolvers should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceName {
    /// `name.namespace.svc.cluster.local`.
    host: String,
    name: String,
    namespace: String,
    vips: Vec<String>,
}

/// A workload placed in its namespace.
struct Placed<'a> {
    workload: &'a Workload,
    netns: String,
    address: Ipv4Addr,
}

/// Starts the mesh in namespaces and runs it, restarting what dies, until cancelled. `net`
/// receives the [`Network`] as soon as it exists, for the caller to remove after stopping
/// the children.
pub(super) async fn run(
    ctx: &Ctx<'_>,
    children: &mut Children,
    net: &mut Option<Network>,
    record: MeshRecord,
) -> anyhow::Result<()> {
    let subnet = ctx.args.netns_subnet;
    let addresses = assign_addresses(&ctx.plan.workloads, subnet)?;
    let network = net.insert(Network::create(subnet)?);
    let mut placed = Vec::with_capacity(addresses.len());
    for (workload, address) in ctx.plan.workloads.iter().zip(addresses) {
        let netns = network.add_workload(&workload.name, address)?;
        placed.push(Placed {
            workload,
            netns,
            address,
        });
    }

    let control = SocketAddr::new(subnet.gateway().into(), 15012);
    let api = SocketAddr::new(subnet.gateway().into(), 15014);
    let (bridge_ns, exe) = (network.bridge_ns().to_owned(), ctx.exe.to_path_buf());
    let in_bridge = move || command_in(&bridge_ns, &exe);
    let root = start_control(ctx, children, in_bridge, control, api).await?;

    let mut services = services_when_ready(ctx, children, api).await?;
    write_all_hosts(network, &placed, &services)?;

    let tokens = Arc::new(TokenStore::open(ctx.data_dir).context("opening the token store")?);
    let telemetry = telemetry_flags(ctx.args);
    for p in &placed {
        let (netns, exe, tokens, root, telemetry, workload, address) = (
            p.netns.clone(),
            ctx.exe.to_path_buf(),
            tokens.clone(),
            root.clone(),
            telemetry.clone(),
            p.workload.clone(),
            p.address,
        );
        let proxy: MakeCommand = Box::new(move || {
            let mut cmd = proxy_command(
                command_in(&netns, &exe),
                &telemetry,
                &tokens,
                control,
                &root,
                &workload,
                address.into(),
            )?;
            cmd.args(["--mode", "transparent", "--capture"]);
            Ok(cmd)
        });
        children.spawn(format!("proxy {}", p.workload.name), proxy)?;
    }
    // Proxies start together; each app waits for its own.
    for p in &placed {
        let name = &p.workload.name;
        let health = SocketAddr::new(p.address.into(), 15020);
        wait_until(
            ctx.ready_deadline,
            children,
            &format!("proxy {name}"),
            || ready(health),
        )
        .await?;
        eprintln!("trellis up: proxy {name} is ready; starting its app");
        let (netns, exe, workload, address) = (
            p.netns.clone(),
            ctx.exe.to_path_buf(),
            p.workload.clone(),
            p.address,
        );
        let app: MakeCommand = Box::new(move || {
            app_command(command_in(&netns, &exe), &workload, address.into(), None)
        });
        children.spawn(format!("app {name}"), app)?;
    }

    let front_admin = spawn_front(ctx, children, &tokens, control, &root)?;
    if let Some(front_admin) = front_admin {
        wait_until(ctx.ready_deadline, children, "the front proxy", || {
            ready(front_admin)
        })
        .await?;
    }
    // A proxy's first snapshot can predate the registrations that move WorkloadEntries to
    // their namespaces' addresses; the mesh is up once every proxy has the latest one.
    let expected = placed.len() + usize::from(front_admin.is_some());
    wait_until(
        ctx.ready_deadline,
        children,
        "every proxy's snapshot",
        || in_sync(api, ctx.data_dir, expected),
    )
    .await?;
    print_summary(ctx, network, &placed, &services, control, api);
    announce(ctx, children, record)?;

    let mut next_refresh = tokio::time::Instant::now() + HOSTS_REFRESH;
    loop {
        children.tick();
        if tokio::time::Instant::now() >= next_refresh {
            refresh_hosts(network, &placed, &mut services, api, ctx.data_dir).await;
            next_refresh = tokio::time::Instant::now() + HOSTS_REFRESH;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Rewrites the hosts files if the control plane's services changed. A failure is not worth
/// stopping the mesh for: names keep resolving to the last known addresses, and the next
/// round tries again.
async fn refresh_hosts(
    network: &mut Network,
    placed: &[Placed<'_>],
    services: &mut Vec<ServiceName>,
    api: SocketAddr,
    data_dir: &Path,
) {
    match fetch_services(api, data_dir).await {
        Ok(now) if now != *services => match write_all_hosts(network, placed, &now) {
            Ok(()) => {
                eprintln!("trellis up: service names updated in the workloads' /etc/hosts");
                *services = now;
            }
            Err(e) => eprintln!("trellis up: could not update service names: {e:#}"),
        },
        Ok(_) => {}
        Err(e) => eprintln!("trellis up: could not refresh service names: {e:#}"),
    }
}

/// Each workload's address: its WorkloadEntry's when that lies in the subnet (a config
/// written for `--netns` gets what it says), else the next free one from `.2` up. The
/// control plane learns the actual address when the proxy registers under the entry's name.
fn assign_addresses(workloads: &[Workload], subnet: Subnet) -> anyhow::Result<Vec<Ipv4Addr>> {
    let reserved = |ip: Ipv4Addr| {
        let k = ip.octets()[3];
        k == 0 || ip == subnet.gateway() || k >= subnet.host_side().octets()[3]
    };
    let mut taken = BTreeSet::new();
    for w in workloads {
        if let IpAddr::V4(ip) = w.address {
            if subnet.contains(ip) {
                if reserved(ip) {
                    bail!(
                        "WorkloadEntry {}: {ip} is reserved in {subnet} (.1 is the bridge, \
                         .254 the host)",
                        w.name
                    );
                }
                if !taken.insert(ip) {
                    bail!("two WorkloadEntries have the address {ip}");
                }
            }
        }
    }
    let mut free = (2..subnet.host_side().octets()[3])
        .map(|k| subnet.host(k))
        .filter(|ip| !taken.contains(ip));
    workloads
        .iter()
        .map(|w| match w.address {
            IpAddr::V4(ip) if subnet.contains(ip) => Ok(ip),
            _ => free
                .next()
                .ok_or_else(|| anyhow!("{subnet} has no address left for {}", w.name)),
        })
        .collect()
}

/// The control plane's services, once its API answers.
async fn services_when_ready(
    ctx: &Ctx<'_>,
    children: &mut Children,
    api: SocketAddr,
) -> anyhow::Result<Vec<ServiceName>> {
    wait_for(
        ctx.ready_deadline,
        children,
        "the control plane's API",
        || async move { fetch_services(api, ctx.data_dir).await.ok() },
    )
    .await
}

/// The control plane's status. The read token is read at each call: the control plane
/// writes it when it first starts, which may be after `up` first asks.
async fn status(api: SocketAddr, data_dir: &Path) -> anyhow::Result<Value> {
    let token = crate::api_client::read_token(data_dir)?;
    crate::api_client::get(api, "/api/v1/status", &token).await
}

/// Whether `expected` proxies are connected and have all ACKed the published snapshot.
async fn in_sync(api: SocketAddr, data_dir: &Path, expected: usize) -> bool {
    let Ok(status) = status(api, data_dir).await else {
        return false;
    };
    let version = &status["snapshot_version"];
    let proxies = status["proxies"].as_array().map_or(&[][..], Vec::as_slice);
    proxies.len() >= expected && proxies.iter().all(|p| &p["acked_version"] == version)
}

async fn fetch_services(api: SocketAddr, data_dir: &Path) -> anyhow::Result<Vec<ServiceName>> {
    services_from_status(&status(api, data_dir).await?)
}

/// The `services` of a `/api/v1/status` answer.
fn services_from_status(status: &Value) -> anyhow::Result<Vec<ServiceName>> {
    let list = status["services"]
        .as_array()
        .ok_or_else(|| anyhow!("the control plane's status lists no services"))?;
    let text = |v: &Value, field: &str| {
        v[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("a service in the control plane's status has no {field}"))
    };
    list.iter()
        .map(|s| {
            Ok(ServiceName {
                host: text(s, "host")?,
                name: text(s, "name")?,
                namespace: text(s, "namespace")?,
                vips: s["vips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            })
        })
        .collect()
}

fn write_all_hosts(
    network: &mut Network,
    placed: &[Placed<'_>],
    services: &[ServiceName],
) -> anyhow::Result<()> {
    let gateway = network.subnet().gateway();
    for p in placed {
        let text = hosts_file(p.workload, &p.netns, p.address, gateway, services);
        network.write_hosts(&p.netns, &text)?;
    }
    Ok(())
}

/// `/etc/hosts` for one workload: every service's virtual IPs under the names a Kubernetes
/// resolver would answer in the workload's namespace (`name` only for services of its own
/// namespace, as with the search path `NS.svc.cluster.local`).
fn hosts_file(
    w: &Workload,
    netns: &str,
    own: Ipv4Addr,
    gateway: Ipv4Addr,
    services: &[ServiceName],
) -> String {
    let mut out = format!(
        "# /etc/hosts of workload {} in network namespace {netns}, written by `trellis up \
         --netns`\n# (pid {}): service names to the virtual IPs the mesh routes by.\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{}\n\
         {gateway}\ttrellis-control\n",
        w.name,
        std::process::id(),
        w.name
    );
    for s in services {
        let mut names = vec![
            s.host.clone(),
            format!("{}.{}.svc", s.name, s.namespace),
            format!("{}.{}", s.name, s.namespace),
        ];
        if s.namespace == w.namespace {
            names.push(s.name.clone());
        }
        for vip in &s.vips {
            out.push_str(&format!("{vip}\t{}\n", names.join(" ")));
        }
    }
    out
}

fn print_summary(
    ctx: &Ctx<'_>,
    network: &Network,
    placed: &[Placed<'_>],
    services: &[ServiceName],
    control: SocketAddr,
    api: SocketAddr,
) {
    let subnet = network.subnet();
    println!(
        "Trellis mesh is up in network namespaces: {} workloads on {subnet}, control plane on \
         {control}",
        placed.len()
    );
    println!();
    println!(
        "  {:<16} {:<15} {:<36} IDENTITY",
        "WORKLOAD", "ADDRESS", "NETNS"
    );
    for p in placed {
        println!(
            "  {:<16} {:<15} {:<36} {}",
            p.workload.name,
            p.address,
            p.netns,
            p.workload.identity()
        );
    }
    println!();
    println!("  {:<24} VIRTUAL IP", "SERVICE");
    for s in services {
        println!(
            "  {:<24} {}",
            format!("{}.{}", s.name, s.namespace),
            s.vips.join(", ")
        );
    }
    println!();
    println!(
        "The host reaches the bridge {} through {} at {}; the bridge namespace is {}.",
        subnet.gateway(),
        network.host_link(),
        subnet.host_side(),
        network.bridge_ns()
    );
    // From inside a workload, by name, through both proxies: what an app sees.
    let from_inside = placed
        .last()
        .zip(ctx.plan.front.as_ref())
        .map(|(p, front)| {
            format!(
                "ip netns exec {} curl -s http://{}:{}/",
                p.netns, front.service, front.port
            )
        });
    print_tries(ctx, api, from_inside.as_deref());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn workload(name: &str, ns: &str, address: &str) -> Workload {
        Workload {
            name: name.into(),
            namespace: ns.into(),
            service_account: name.into(),
            address: address.parse().expect("test address"),
            labels: BTreeMap::new(),
            ports: BTreeMap::new(),
            calls: Vec::new(),
            startup_calls: Vec::new(),
            call_timeout: None,
            call_retries: None,
            finish_abandoned: false,
            delay: None,
            fail_first: None,
            echo: false,
        }
    }

    #[test]
    fn addresses_keep_entries_in_the_subnet_and_fill_in_the_rest() {
        let subnet: Subnet = "198.18.100.0/24".parse().expect("valid");
        let ws = [
            workload("a", "default", "127.0.1.1"),
            workload("b", "default", "198.18.100.2"),
            workload("c", "default", "10.0.0.7"),
        ];
        let got = assign_addresses(&ws, subnet).expect("assigned");
        assert_eq!(
            got,
            [
                Ipv4Addr::new(198, 18, 100, 3),
                Ipv4Addr::new(198, 18, 100, 2),
                Ipv4Addr::new(198, 18, 100, 4)
            ]
        );
        for bad in ["198.18.100.1", "198.18.100.254", "198.18.100.0"] {
            assert!(
                assign_addresses(&[workload("x", "default", bad)], subnet).is_err(),
                "{bad} accepted"
            );
        }
        let twice = [
            workload("x", "default", "198.18.100.9"),
            workload("y", "default", "198.18.100.9"),
        ];
        assert!(assign_addresses(&twice, subnet).is_err());
    }

    #[test]
    fn hosts_name_services_as_a_cluster_resolver_would() {
        let status = serde_json::json!({"services": [
            {"host": "reviews.default.svc.cluster.local", "name": "reviews",
             "namespace": "default", "vips": ["240.240.1.2"]},
            {"host": "db.data.svc.cluster.local", "name": "db", "namespace": "data",
             "vips": ["10.96.0.10"]},
        ]});
        let services = services_from_status(&status).expect("parsed");
        let text = hosts_file(
            &workload("productpage-v1", "default", "127.0.1.1"),
            "trellis-up-1-productpage-v1",
            Ipv4Addr::new(198, 18, 100, 2),
            Ipv4Addr::new(198, 18, 100, 1),
            &services,
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "127.0.0.1\tlocalhost",
                "::1\tlocalhost ip6-localhost ip6-loopback",
                "198.18.100.2\tproductpage-v1",
                "198.18.100.1\ttrellis-control",
                "240.240.1.2\treviews.default.svc.cluster.local reviews.default.svc \
                 reviews.default reviews",
                // Another namespace's service: no short name.
                "10.96.0.10\tdb.data.svc.cluster.local db.data.svc db.data",
            ]
        );
        assert!(services_from_status(&serde_json::json!({})).is_err());
    }
}
