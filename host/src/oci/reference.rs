//! An OCI reference as a check's `plugin` writes it: `oci://REGISTRY/REPOSITORY:TAG`,
//! `oci://REGISTRY/REPOSITORY@sha256:DIGEST`, or both (the digest then decides), with
//! the OCI distribution spec's grammar for each part.

use std::fmt;

/// The scheme that marks a plugin as an OCI reference.
pub const SCHEME: &str = "oci://";

/// A parsed reference. At least one of `tag` and `digest` is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository within it, like `checks/telegram`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:` and 64 lower-case hex digits.
    pub digest: Option<String>,
}

/// The longest tag the distribution spec allows.
const MAX_TAG_CHARS: usize = 128;

impl Reference {
    /// Parses `text`, which must begin with `oci://`; the error says which part is
    /// wrong and what it should look like.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("'{text}' does not begin with {SCHEME}"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (rest, None),
        };
        let (registry, path) = rest.split_once('/').ok_or_else(|| {
            format!("'{text}' names no repository: write {SCHEME}REGISTRY/REPOSITORY:TAG")
        })?;
        // A colon after the last slash starts the tag; one before it is the port's.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (path, None),
        };
        if !valid_registry(registry) {
            return Err(format!(
                "'{registry}' is not a registry: write host or host:port"
            ));
        }
        if !valid_repository(repository) {
            return Err(format!(
                "'{repository}' is not a repository name: lower-case letters and digits, \
                 separated by '.', '_', '__', '-' or '/'"
            ));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(format!(
                "'{tag}' is not a tag: up to {MAX_TAG_CHARS} letters, digits, '_', '.' and '-', \
                 not beginning with '.' or '-'"
            ));
        }
        if let Some(digest) = digest
            && !valid_digest(digest)
        {
            return Err(format!(
                "'{digest}' is not a digest: write sha256: and 64 lower-case hex digits"
            ));
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "'{text}' has neither a tag nor a digest: add :TAG or @sha256:DIGEST"
            ));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// The same repository at `digest` (the tag kept, for what people read).
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or_default()
    }

    /// `registry/repository`, which trust prefixes match.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `host` or `host:port`: letters, digits, '.', '-' (and an IPv6 literal is not needed
/// for a registry name).
fn valid_registry(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

/// Path components of lower-case alphanumerics joined by one '.', one or two '_', or
/// any number of '-' (the distribution spec's grammar).
fn valid_repository(text: &str) -> bool {
    !text.is_empty() && text.len() <= 255 && text.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes: Vec<char> = component.chars().collect();
    let Some((first, last)) = bytes.first().zip(bytes.last()) else {
        return false;
    };
    if !alnum(*first) || !alnum(*last) {
        return false;
    }
    let mut separator = String::new();
    for &c in &bytes {
        if alnum(c) {
            if !(separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.chars().all(|s| s == '-'))
            {
                return false;
            }
            separator.clear();
        } else if matches!(c, '.' | '_' | '-') {
            separator.push(c);
        } else {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    chars.next().is_some_and(word)
        && tag.len() <= MAX_TAG_CHARS
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// `sha256:` and 64 lower-case hex digits: the only algorithm the host pins.
pub fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_tags_digests_and_ports() {
        let r = Reference::parse("oci://127.0.0.1:5000/checks/telegram:1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "checks/telegram");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.target(), "1");
        let pinned = Reference::parse(&format!("oci://ghcr.io/a/b-c@{D}")).unwrap();
        assert_eq!((pinned.tag.as_deref(), pinned.target()), (None, D));
        let both = Reference::parse(&format!("oci://reg.example.com/x:v1.2@{D}")).unwrap();
        assert_eq!(both.target(), D);
        assert_eq!(
            both.to_string(),
            format!("oci://reg.example.com/x:v1.2@{D}")
        );
        assert_eq!(
            r.pinned(D).to_string(),
            format!("oci://127.0.0.1:5000/checks/telegram:1@{D}")
        );
    }

    #[test]
    fn every_bad_part_is_named() {
        for (text, names) in [
            ("https://r/x:1", "does not begin with oci://"),
            ("oci://registry", "names no repository"),
            ("oci://r:99999/x:1", "is not a registry"),
            ("oci://r/Upper:1", "'Upper' is not a repository"),
            ("oci://r/a..b:1", "is not a repository"),
            ("oci://r/x:-bad", "'-bad' is not a tag"),
            ("oci://r/x@sha256:ABC", "is not a digest"),
            ("oci://r/x@md5:0123", "is not a digest"),
            ("oci://r/x", "neither a tag nor a digest"),
        ] {
            let error = Reference::parse(text).unwrap_err();
            assert!(error.contains(names), "{text}: {error}");
        }
    }
}
