//! The one pure translation from Kubernetes objects to what the data paths serve:
//! `Snapshot -> Translation { RouteTable, Diagnostics }`. No I/O, no clocks: the same input
//! always yields the same table, so it is unit-tested with YAML fixtures.
pub mod annotations;
mod backend;
mod class;

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};

pub use class::{CONTROLLER_NAME, ClassFilter};

use crate::{
    diagnostics::Diagnostic,
    provider::{Snapshot, object_ref},
    routes::{IngressRef, PathType, Route, RouteTable},
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
    let mut out = Translation::default();
    let resolver = backend::Resolver::new(snapshot);

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

    for ingress in ours {
        let iref = IngressRef {
            namespace: ingress
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: ingress.metadata.name.clone().unwrap_or_default(),
        };
        match compile_ingress(ingress, &iref, &resolver) {
            Ok(compiled) => {
                install(&mut out, compiled);
                out.accepted.push(iref);
            }
            Err(errors) => {
                out.diagnostics.extend(errors);
                out.rejected.push(iref);
            }
        }
    }
    out
}

/// An Ingress whose every path resolved.
struct Compiled {
    ingress: IngressRef,
    /// (host or None, route)
    routes: Vec<(Option<String>, Arc<Route>)>,
    default_backend: Option<Arc<Route>>,
    /// Diagnostics that do not reject the Ingress.
    warnings: Vec<Diagnostic>,
}

fn compile_ingress(
    ingress: &Ingress,
    iref: &IngressRef,
    resolver: &backend::Resolver<'_>,
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
    let policy = Arc::new(policy);

    let make_route = |field: String, path: &str, path_type: PathType, backend: &IngressBackend| {
        resolver
            .resolve(&iref.namespace, backend, &object, &field)
            .map(|b| {
                Arc::new(Route {
                    ingress: iref.clone(),
                    path: path.to_owned(),
                    path_type,
                    backend: b,
                    policy: policy.clone(),
                })
            })
    };

    let default_backend = match spec.default_backend.as_ref() {
        Some(b) => match make_route("spec.defaultBackend".into(), "/", PathType::Prefix, b) {
            Ok(r) => Some(r),
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
            routes,
            default_backend,
            warnings,
        })
    } else {
        Err(errors)
    }
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

fn validate_host(host: &str) -> Result<(), String> {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let ok = !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a valid DNS name (a wildcard may only be a leading \"*.\")"
        ))
    }
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
        if !matcher.insert(&path, path_type, route) {
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
