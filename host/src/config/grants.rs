//! What the operator grants a check, as written in its table or grant file: the
//! origins it may call ([`HttpPolicy`]), the datasources it may query ([`SqlPolicy`])
//! and its settings and secrets ([`Settings`]), together [`Grants`]. The capabilities
//! enforce them (`crate::capabilities`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use url::{Host, Url};

/// Everything the operator granted one check: its `grants` table. What it is told
/// (its settings and secrets) is [`Settings`], beside it.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Origins it may send HTTP requests to (`grants.http`).
    pub http: HttpPolicy,
    /// Datasources it may query (`grants.sql`).
    pub sql: SqlPolicy,
    /// Sample names it may export to `/metrics` (`grants.metrics`).
    pub metrics: BTreeSet<String>,
}

/// One allowed origin: scheme, host and port, as in the web's same-origin rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: Host<String>,
    port: u16,
}

impl Origin {
    /// The origin of an http(s) URL; `None` for other schemes or a URL without a host.
    pub fn of(url: &Url) -> Option<Origin> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        Some(Origin {
            scheme: scheme.to_owned(),
            host: url.host()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// An allowlist entry that is not an origin; carries the entry and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid http origin '{entry}': {reason} (expected e.g. \"https://api.example.com\" or \"http://127.0.0.1:8080\")"
)]
pub struct OriginError {
    entry: String,
    reason: &'static str,
}

/// The origins a check may send requests to. The default allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    any: bool,
    origins: Vec<Origin>,
}

impl HttpPolicy {
    /// Parses allowlist entries: origins like `https://host[:port]`, or `*` for any.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<HttpPolicy, OriginError> {
        let mut policy = HttpPolicy::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let error = |reason| OriginError {
                entry: entry.to_owned(),
                reason,
            };
            let url = Url::parse(entry).map_err(|_| error("not a URL"))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(error("an origin has no user name or password"));
            }
            if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some()
            {
                return Err(error("an origin has no path, query or fragment"));
            }
            let origin = Origin::of(&url)
                .ok_or_else(|| error("the scheme must be http or https and a host is required"))?;
            policy.origins.push(origin);
        }
        Ok(policy)
    }

    /// Whether a request to `url` may be sent. Non-http(s) URLs and URLs without a
    /// host are never allowed.
    pub fn allows(&self, url: &Url) -> bool {
        match Origin::of(url) {
            Some(origin) => self.any || self.origins.contains(&origin),
            None => false,
        }
    }

    /// Whether nothing at all is allowed.
    pub fn is_empty(&self) -> bool {
        !self.any && self.origins.is_empty()
    }

    /// The allowlist as written in a config: `*`, then each origin.
    pub fn entries(&self) -> Vec<String> {
        let any = self.any.then(|| "*".to_owned());
        any.into_iter()
            .chain(self.origins.iter().map(Origin::to_string))
            .collect()
    }
}

/// The datasource names a check may query. The default grants none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlPolicy {
    names: BTreeSet<String>,
}

impl SqlPolicy {
    /// A policy granting these datasource names.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        SqlPolicy {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the check may query `datasource`.
    pub fn allows(&self, datasource: &str) -> bool {
        self.names.contains(datasource)
    }

    /// The granted names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// One setting's value and whether it is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub secret: bool,
}

/// A check's settings. The default has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, Setting>,
}

impl Settings {
    /// Sets a plain (non-secret) value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        self.values.insert(
            key.into(),
            Setting {
                value,
                secret: false,
            },
        );
    }

    /// Sets a secret value.
    pub fn set_secret(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        self.values.insert(
            key.into(),
            Setting {
                value,
                secret: true,
            },
        );
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|s| s.value.as_str())
    }

    /// Every secret value.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.values
            .values()
            .filter(|s| s.secret)
            .map(|s| s.value.as_str())
    }

    /// Keys and whether each is secret (values are never listed).
    pub fn keys(&self) -> impl Iterator<Item = (&str, bool)> {
        self.values.iter().map(|(k, s)| (k.as_str(), s.secret))
    }
}
