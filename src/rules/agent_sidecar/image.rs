//! Image patterns: which pods are a tracing agent's, by the images they run.
//!
//! Image references are compared in Docker's normalized form: the repository without a
//! tag or digest, and without Docker Hub's implied `docker.io/` and `library/`, so that
//! `docker.io/datadog/agent:7` and `datadog/agent@sha256:…` are both `datadog/agent`.

use serde::{Deserialize, Serialize};

/// An image repository pattern: a literal (compared as is, the common case) or a glob
/// (`*`, `?`, `[...]`), written in Docker's normalized form (`datadog/agent`, not
/// `docker.io/library/...`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum ImagePattern {
    Literal(String),
    /// A glob, with the literal text after its last wildcard: a repository must end
    /// with it, which rules out most candidates before the (backtracking) glob match.
    Glob {
        pattern: glob::Pattern,
        suffix: String,
    },
}

// === impl ImagePattern ===

impl ImagePattern {
    /// Parses a pattern, dropping Docker Hub's implied `docker.io/` and `library/`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = normalize_repository(s);
        if s.is_empty() {
            return Err("empty image pattern".into());
        }
        if !s.contains(['*', '?', '[']) {
            return Ok(Self::Literal(s.to_owned()));
        }
        let pattern = glob::Pattern::new(s)
            .map_err(|e| format!("bad pattern {s:?}: {} at character {}", e.msg, e.pos))?;
        let suffix = s
            .rfind(['*', '?', ']'])
            .map_or(s, |i| &s[i + 1..])
            .to_owned();
        Ok(Self::Glob { pattern, suffix })
    }

    /// Whether a normalized repository (see [`normalize_repository`]) matches.
    pub fn matches(&self, repository: &str) -> bool {
        match self {
            Self::Literal(l) => l == repository,
            Self::Glob { pattern, suffix } => {
                repository.ends_with(suffix.as_str()) && pattern.matches(repository)
            }
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Literal(l) => l,
            Self::Glob { pattern, .. } => pattern.as_str(),
        }
    }
}

impl PartialEq for ImagePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl TryFrom<String> for ImagePattern {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<ImagePattern> for String {
    fn from(p: ImagePattern) -> String {
        p.as_str().to_owned()
    }
}

// === helpers ===

/// An image reference or repository in Docker's normalized form: without a tag or
/// digest, and without Docker Hub's implied `docker.io/` (or `index.docker.io/`) and
/// `library/` prefixes. `docker.io/datadog/agent:7@sha256:…` → `datadog/agent`.
pub fn normalize_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let repo = match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    };
    let repo = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|p| repo.strip_prefix(p))
        .unwrap_or(repo);
    // `library/` is implied only for Docker Hub images, which have no registry host.
    let hub = repo.split_once('/').is_none_or(|(first, _)| {
        !(first.contains('.') || first.contains(':') || first == "localhost")
    });
    if hub {
        repo.strip_prefix("library/").unwrap_or(repo)
    } else {
        repo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_tag_digest_and_docker_hub_prefixes() {
        assert_eq!(
            normalize_repository("reg:5000/a/b:1.0@sha256:ab"),
            "reg:5000/a/b"
        );
        assert_eq!(normalize_repository("reg:5000/a/b"), "reg:5000/a/b");
        assert_eq!(normalize_repository("b"), "b");
        assert_eq!(normalize_repository("docker.io/library/nginx:1"), "nginx");
        assert_eq!(
            normalize_repository("index.docker.io/datadog/agent"),
            "datadog/agent"
        );
        assert_eq!(
            normalize_repository("localhost/library/x"),
            "localhost/library/x"
        );
    }
}
