//! The one pure translation from Kubernetes objects to what the data paths serve:
//! `Snapshot -> Translation { RouteTable, Diagnostics }`. No I/O, no clocks: the same input
//! always yields the same table, so it is unit-tested with YAML fixtures.
pub mod annotations;
mod backend;
pub mod basic_auth;
mod class;
pub mod configmaps;
pub mod settings;
pub mod tls;

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::Arc,
};

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};

pub use class::{CONTROLLER_NAME, ClassFilter};

use crate::{
    balance::StateRegistry,
    diagnostics::Diagnostic,
    provider::{Snapshot, object_ref},
    routes::{Canary, IngressRef, PathType, Route, RouteInfo, RouteTable},
};

/// The result of one translation.
#[derive(Debug, Default)]
pub struct Translation {
    pub routes: RouteTable,
    pub diagnostics: Vec<Diagnostic>,
    /// Ingresses of our class that were accepted / rejected.
    pub accepted: Vec<IngressRef>,
    pub rejected: Vec<IngressRef>,
}

impl Translation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == crate::diagnostics::Severity::Error)
    }
}

/// Translates a snapshot. Ingresses of other classes are ignored; an invalid Ingress is
/// rejected alone (with diagnostics naming its fields) and everything else is served.
pub fn translate(snapshot: &Snapshot, classes: &ClassFilter) -> Translation {
    translate_with(snapshot, classes, &StateRegistry::default())
}

/// [`translate`], with the endpoints' balancing state (EWMA, ejections) taken from
/// `registry`, so that it survives the publish of the result (the daemon's publisher).
pub fn translate_with(
    snapshot: &Snapshot,
    classes: &ClassFilter,
    registry: &StateRegistry,
) -> Translation {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    translate_on(snapshot, classes, registry, threads)
}

/// Below this many Ingresses, compiling them on one thread is quicker than starting more.
const PARALLEL_FROM: usize = 256;

/// [`translate_with`] compiling the Ingresses on up to `threads` threads (each Ingress is
/// compiled on its own; the results are used in age order, so the table is the same).
fn translate_on(
    snapshot: &Snapshot,
    classes: &ClassFilter,
    registry: &StateRegistry,
    threads: usize,
) -> Translation {
    let mut out = Translation::default();
    out.routes.limit_status =
        settings::limit_status(snapshot, &classes.namespace, &mut out.diagnostics);
    let resolver = backend::Resolver::new(snapshot, registry);

    let mut ours: Vec<&Ingress> = snapshot
        .ingresses
        .iter()
        .filter(|i| classes.matches(i, snapshot))
        .collect();
    // Oldest first: when several Ingresses define the same host and path, the oldest wins,
    // as in ingress-nginx. Name order breaks ties so the result is deterministic.
    ours.sort_by(|a, b| {
        let key = |i: &Ingress| {
            (
                i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                object_ref(&i.metadata),
            )
        };
        key(a).cmp(&key(b))
    });

    // Accepted Ingresses in age order, for the certificate table.
    let mut served: Vec<(&Ingress, IngressRef)> = Vec::new();
    let mut mains = Vec::new();
    let mut canaries: HashMap<RouteKey, Vec<Canary>> = HashMap::new();
    let compiled = compile_all(&ours, &resolver, snapshot, threads);
    for (ingress, (iref, result)) in ours.into_iter().zip(compiled) {
        match result {
            Ok(compiled) if compiled.policy.canary.is_some() => {
                out.diagnostics.extend(compiled.warnings);
                let rule = compiled.policy.canary.clone();
                for (host, route) in compiled.routes {
                    if let Some(rule) = rule.clone() {
                        canaries
                            .entry(route_key(&host, &route))
                            .or_default()
                            .push(Canary {
                                ingress: iref.clone(),
                                backend: route.backend,
                                policy: route.policy,
                                rule,
                                labels: route.labels,
                            });
                    }
                }
                out.accepted.push(iref);
            }
            Ok(compiled) => {
                mains.push(compiled);
                served.push((ingress, iref.clone()));
                out.accepted.push(iref);
            }
            Err(errors) => {
                out.diagnostics.extend(errors);
                out.rejected.push(iref);
            }
        }
    }
    // Hosts whose Ingress asks for `from-to-www-redirect`, oldest Ingress first (each host
    // once: an Ingress has a route per path).
    let mut www: Vec<(String, IngressRef)> = Vec::new();
    let mut www_seen: HashSet<String> = HashSet::new();
    // `server-alias`es, oldest Ingress first: (alias, the Ingress's first exact host).
    let mut aliases: Vec<(String, Option<String>, IngressRef)> = Vec::new();
    for mut compiled in mains {
        if !compiled.policy.server_aliases.is_empty() {
            let host = compiled
                .routes
                .iter()
                .filter_map(|(h, _)| h.as_ref())
                .find(|h| !h.starts_with("*."))
                .map(|h| h.to_ascii_lowercase());
            for alias in &compiled.policy.server_aliases {
                aliases.push((alias.clone(), host.clone(), compiled.ingress.clone()));
            }
        }
        if compiled.policy.redirect.from_to_www {
            for host in compiled.routes.iter().filter_map(|(h, _)| h.as_ref()) {
                if www_seen.insert(host.clone()) {
                    www.push((host.clone(), compiled.ingress.clone()));
                }
            }
        }
        for (host, route) in &mut compiled.routes {
            if let Some(mut c) = canaries.remove(&route_key(host, route)) {
                for canary in &mut c {
                    canary.labels = Arc::new(RouteInfo {
                        service: canary.backend.service.clone(),
                        canary: true,
                        ..(*route.labels).clone()
                    });
                }
                route.canaries = c;
            }
        }
        if compiled.policy.ssl_passthrough {
            passthrough(&mut out, &compiled);
        }
        install(&mut out, compiled);
    }
    www_redirects(&mut out, www);
    server_aliases(&mut out, aliases);
    for ((host, path, path_type), orphans) in canaries {
        for c in orphans {
            out.diagnostics.push(Diagnostic::warning(
                c.ingress.to_string(),
                "metadata.annotations[nginx.ingress.kubernetes.io/canary]",
                format!(
                    "no main Ingress serves host {:?} path {path:?} ({path_type}); the canary is idle",
                    host.as_deref().unwrap_or("*")
                ),
            ));
        }
    }
    let (certs, tls_diags) = tls::build(snapshot, &served);
    out.routes.tls = Arc::new(certs);
    out.diagnostics.extend(tls_diags);
    out
}

type CompileResult = (IngressRef, Result<Compiled, Vec<Diagnostic>>);

/// Compiles each Ingress of `ours` (in order), on up to `threads` scoped threads when there
/// are many.
fn compile_all(
    ours: &[&Ingress],
    resolver: &backend::Resolver<'_>,
    snapshot: &Snapshot,
    threads: usize,
) -> Vec<CompileResult> {
    let one = |ingress: &&Ingress| -> CompileResult {
        let iref = IngressRef {
            namespace: ingress
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: ingress.metadata.name.clone().unwrap_or_default(),
        };
        let result = compile_ingress(ingress, &iref, resolver, snapshot);
        (iref, result)
    };
    if threads < 2 || ours.len() < PARALLEL_FROM {
        return ours.iter().map(one).collect();
    }
    let one = &one;
    std::thread::scope(|s| {
        let parts: Vec<_> = ours
            .chunks(ours.len().div_ceil(threads))
            .map(|chunk| s.spawn(move || chunk.iter().map(one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// (host, path as written, path type): how a canary finds its main route.
type RouteKey = (Option<String>, String, PathType);

fn route_key(host: &Option<String>, route: &Route) -> RouteKey {
    (host.clone(), route.path.clone(), route.path_type)
}

/// An Ingress whose every path resolved.
struct Compiled {
    ingress: IngressRef,
    policy: Arc<annotations::IngressPolicy>,
    /// (host or None, route)
    routes: Vec<(Option<String>, Route)>,
    default_backend: Option<Arc<Route>>,
    /// Diagnostics that do not reject the Ingress.
    warnings: Vec<Diagnostic>,
}

fn compile_ingress(
    ingress: &Ingress,
    iref: &IngressRef,
    resolver: &backend::Resolver<'_>,
    snapshot: &Snapshot,
) -> Result<Compiled, Vec<Diagnostic>> {
    let object = iref.to_string();
    let mut routes = Vec::new();
    let spec = ingress.spec.clone().unwrap_or_default();
    let empty = Default::default();
    let (policy, annotation_diags) = annotations::parse(
        ingress.metadata.annotations.as_ref().unwrap_or(&empty),
        &object,
    );
    let (mut errors, warnings): (Vec<_>, Vec<_>) = annotation_diags
        .into_iter()
        .partition(|d| d.severity == crate::diagnostics::Severity::Error);
    let mut policy = policy;
    configmaps::resolve(&mut policy, snapshot, &object, &mut errors);
    basic_auth::resolve(&mut policy, snapshot, &object, &mut errors);
    let fallback = match &policy.default_backend {
        Some(svc) => match resolver.resolve_service_first_port(&iref.namespace, svc) {
            Ok(b) => Some(b),
            Err(msg) => {
                errors.push(Diagnostic::error(
                    &object,
                    "metadata.annotations[nginx.ingress.kubernetes.io/default-backend]",
                    msg,
                ));
                None
            }
        },
        None => None,
    };
    let service_upstream = policy.service_upstream;
    let regex_paths = policy.rewrite.regex_paths;
    let policy = Arc::new(policy);

    let make_route = |field: String, path: &str, path_type: PathType, backend: &IngressBackend| {
        let path_type = match path_type {
            PathType::Prefix if regex_paths => PathType::Regex,
            t => t,
        };
        let regex = match path_type {
            PathType::Regex => match regex::Regex::new(&format!("(?i)^{path}")) {
                Ok(re) => Some(re),
                Err(e) => {
                    return Err(Diagnostic::error(
                        &object,
                        field.replace(".backend", ".path"),
                        format!("invalid regex {path:?}: {}", one_line(&e)),
                    ));
                }
            },
            _ => None,
        };
        resolver
            .resolve(&iref.namespace, backend, &object, &field, service_upstream)
            .map(|b| Route {
                labels: Arc::new(RouteInfo {
                    path: path.to_owned(),
                    namespace: iref.namespace.clone(),
                    ingress: iref.name.clone(),
                    service: b.service.clone(),
                    canary: false,
                    no_access_log: policy.no_access_log,
                }),
                ingress: iref.clone(),
                path: path.to_owned(),
                path_type,
                backend: b,
                policy: policy.clone(),
                regex,
                canaries: Vec::new(),
                fallback: fallback.clone(),
            })
    };

    let default_backend = match spec.default_backend.as_ref() {
        Some(b) => match make_route("spec.defaultBackend".into(), "/", PathType::Prefix, b) {
            Ok(r) => Some(Arc::new(r)),
            Err(d) => {
                errors.push(d);
                None
            }
        },
        None => None,
    };

    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = rule.host.clone().filter(|h| !h.is_empty());
        if let Some(Err(msg)) = host.as_deref().map(validate_host) {
            errors.push(Diagnostic::error(
                &object,
                format!("spec.rules[{i}].host"),
                msg,
            ));
            continue;
        }
        let Some(http) = &rule.http else { continue };
        for (j, p) in http.paths.iter().enumerate() {
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            match path_of(p) {
                Ok((path, path_type)) => {
                    match make_route(format!("{field}.backend"), &path, path_type, &p.backend) {
                        Ok(r) => routes.push((host.clone(), r)),
                        Err(d) => errors.push(d),
                    }
                }
                Err((sub, msg)) => {
                    errors.push(Diagnostic::error(&object, format!("{field}.{sub}"), msg))
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(Compiled {
            ingress: iref.clone(),
            policy: policy.clone(),
            routes,
            default_backend,
            warnings,
        })
    } else {
        errors.extend(warnings);
        Err(errors)
    }
}

/// The last line of a multi-line regex error ("error: unclosed group" -> "unclosed group").
fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default().trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

/// The path and its type; ImplementationSpecific is a Prefix match, as ingress-nginx treats
/// it when no regex annotation is set.
fn path_of(p: &HTTPIngressPath) -> Result<(String, PathType), (&'static str, String)> {
    let path = p.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') {
        return Err((
            "path",
            format!("{path:?} must be an absolute path starting with '/'"),
        ));
    }
    let path_type = match p.path_type.as_str() {
        "Exact" => PathType::Exact,
        "Prefix" | "ImplementationSpecific" => PathType::Prefix,
        "" => {
            return Err((
                "pathType",
                "required: Exact, Prefix or ImplementationSpecific".into(),
            ));
        }
        other => {
            return Err((
                "pathType",
                format!("{other:?} is not one of Exact, Prefix, ImplementationSpecific"),
            ));
        }
    };
    Ok((path, path_type))
}

/// Dot-separated labels of 1-63 letters, digits and hyphens (no wildcard).
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn validate_host(host: &str) -> Result<(), String> {
    if is_dns_name(host.strip_prefix("*.").unwrap_or(host)) {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a valid DNS name (a wildcard may only be a leading \"*.\")"
        ))
    }
}

/// `from-to-www-redirect` as ingress-nginx does it: for an Ingress of `foo.com`, requests
/// for `www.foo.com` are redirected to `foo.com` (and for `www.foo.com`, `foo.com` to it),
/// unless an Ingress has rules for that other host, which are then served as usual.
fn www_redirects(out: &mut Translation, hosts: Vec<(String, IngressRef)>) {
    const FIELD: &str = "metadata.annotations[nginx.ingress.kubernetes.io/from-to-www-redirect]";
    for (host, ingress) in hosts {
        // Request hosts are matched lower-case (`routes::request_host`).
        let host = host.to_ascii_lowercase();
        if host.starts_with("*.") {
            out.diagnostics.push(Diagnostic::warning(
                ingress.to_string(),
                FIELD,
                format!("ignored for the wildcard host {host:?}"),
            ));
            continue;
        }
        let other = match host.strip_prefix("www.") {
            Some(bare) => bare.to_owned(),
            None => format!("www.{host}"),
        };
        if out.routes.hosts.has_exact(&other) {
            out.diagnostics.push(Diagnostic::warning(
                ingress.to_string(),
                FIELD,
                format!("ignored for host {host:?}: {other:?} has rules of its own"),
            ));
            continue;
        }
        out.routes.www_redirects.entry(other).or_insert(host);
    }
}

/// `server-alias` as ingress-nginx does it: the alias is served as the Ingress's host
/// (its first exact one), unless an Ingress has rules for the alias itself or an older
/// Ingress took the alias first.
fn server_aliases(out: &mut Translation, aliases: Vec<(String, Option<String>, IngressRef)>) {
    const FIELD: &str = "metadata.annotations[nginx.ingress.kubernetes.io/server-alias]";
    for (alias, host, ingress) in aliases {
        let warn = |out: &mut Translation, msg: String| {
            out.diagnostics
                .push(Diagnostic::warning(ingress.to_string(), FIELD, msg));
        };
        let Some(host) = host else {
            warn(
                out,
                format!("{alias:?} ignored: the Ingress has no rule with an exact host"),
            );
            continue;
        };
        if out.routes.hosts.has_exact(&alias) {
            warn(out, format!("{alias:?} ignored: it has rules of its own"));
            continue;
        }
        match out.routes.aliases.get(&alias) {
            Some(other) if *other != host => warn(
                out,
                format!("{alias:?} ignored: already an alias of {other:?} (an older Ingress)"),
            ),
            Some(_) => {}
            None => {
                out.routes.aliases.insert(alias, host);
            }
        }
    }
}

/// `ssl-passthrough` as ingress-nginx does it: TLS connections whose server name (SNI) is
/// one of the Ingress's hosts, matched exactly, are relayed to the backend of that host's
/// `/` path; an older Ingress's passthrough for a host wins. The Ingress's routes still
/// serve plain HTTP.
fn passthrough(out: &mut Translation, compiled: &Compiled) {
    const FIELD: &str = "metadata.annotations[nginx.ingress.kubernetes.io/ssl-passthrough]";
    let mut ignored: Vec<String> = Vec::new();
    let mut hosts: Vec<&str> = Vec::new();
    for host in compiled.routes.iter().filter_map(|(h, _)| h.as_deref()) {
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        ignored.push(
            "ignored: the Ingress has no rule with a host (passthrough chooses by the TLS \
              server name)"
                .to_owned(),
        );
    }
    for host in hosts {
        if host.starts_with("*.") {
            ignored.push(format!(
                "ignored for the wildcard host {host:?} (server names are matched exactly, as \
                 ingress-nginx does)"
            ));
            continue;
        }
        let root = compiled
            .routes
            .iter()
            .find(|(h, r)| h.as_deref() == Some(host) && r.path == "/");
        let Some((_, route)) = root else {
            ignored.push(format!(
                "ignored for host {host:?}: it has no path \"/\", whose backend takes the TLS \
                 connections"
            ));
            continue;
        };
        match out.routes.passthrough.entry(host.to_ascii_lowercase()) {
            Entry::Occupied(older) => ignored.push(format!(
                "ignored for host {:?}: already passed through to {} by {} (older), which wins",
                older.key(),
                older.get().backend,
                older.get().ingress
            )),
            Entry::Vacant(slot) => {
                slot.insert(crate::routes::Passthrough {
                    ingress: compiled.ingress.clone(),
                    backend: route.backend.clone(),
                    connect_timeout: compiled.policy.upstream.connect_timeout,
                });
            }
        }
    }
    let object = compiled.ingress.to_string();
    out.diagnostics.extend(
        ignored
            .into_iter()
            .map(|msg| Diagnostic::warning(object.as_str(), FIELD, msg)),
    );
}

/// Adds an accepted Ingress's routes; a host+path already taken by an older Ingress stays
/// with it and the newer one gets a warning.
fn install(out: &mut Translation, compiled: Compiled) {
    let object = compiled.ingress.to_string();
    out.diagnostics.extend(compiled.warnings);
    for (host, route) in compiled.routes {
        let matcher = match &host {
            Some(h) => out.routes.hosts.entry(h),
            None => &mut out.routes.any_host,
        };
        let (path, path_type) = (route.path.clone(), route.path_type);
        let inserted = match route.regex.clone() {
            Some(re) => matcher.insert_regex(&path, re, Arc::new(route)),
            None => matcher.insert(&path, path_type, Arc::new(route)),
        };
        if !inserted {
            out.diagnostics.push(Diagnostic::warning(
                &object,
                "spec.rules",
                format!(
                    "host {:?} path {path:?} ({path_type}) is already served by an older \
                     Ingress (or an earlier rule of this one), which wins",
                    host.as_deref().unwrap_or("*")
                ),
            ));
        }
    }
    if out.routes.default_backend.is_none() {
        out.routes.default_backend = compiled.default_backend;
    }
}

#[cfg(test)]
mod tests;
