//! Registry host names: the API host behind docker's default registry and the normalisation
//! of a registry given on its own (`rbuild login HOST`). Image references themselves are
//! [`rbuild_store::Reference`].

pub use rbuild_store::model::DOCKER_HUB;

/// The API host of [`DOCKER_HUB`].
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The API host for a registry name as written in references.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// Normalises a registry given on its own (`rbuild login HOST`): strips a scheme and a
/// trailing path, maps `index.docker.io` and docker's v1 URL to `docker.io`.
pub fn normalize_registry(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_host_of_docker_hub() {
        assert_eq!(api_host(DOCKER_HUB), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn normalizes_login_servers() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(
            normalize_registry("harbor.example.com"),
            "harbor.example.com"
        );
        assert_eq!(
            normalize_registry("http://127.0.0.1:5000/"),
            "127.0.0.1:5000"
        );
    }
}
