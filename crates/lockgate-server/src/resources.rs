//! The protected resources checks attach to. Microsoft's "Define approvals and checks": approvals
//! and checks are defined on environments, service connections, variable groups, secure files,
//! agent pools (and repositories); they are evaluated when a stage that uses the resource is about
//! to start, and the stage waits until all checks on all the resources it uses passed.
//!
//! A check is stored under its resource's key: an environment's name as it is (environment names
//! hold no `:`), any other resource as `type:name`, with Azure's resource type names
//! (`variablegroup`, `securefile`, `endpoint` for a service connection, `queue` for an agent pool).

use axum::extract::{FromRequestParts, MatchedPath, Path};
use axum::http::request::Parts;
use lockgate_store::Job;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// A kind of protected resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    Environment,
    VariableGroup,
    SecureFile,
    ServiceConnection,
    AgentPool,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Environment,
        ResourceKind::VariableGroup,
        ResourceKind::SecureFile,
        ResourceKind::ServiceConnection,
        ResourceKind::AgentPool,
    ];

    /// The collection's segment in the API's paths (`/api/v1/projects/{p}/SEGMENT/{name}/checks/…`).
    pub fn segment(self) -> &'static str {
        match self {
            ResourceKind::Environment => "environments",
            ResourceKind::VariableGroup => "variable-groups",
            ResourceKind::SecureFile => "secure-files",
            ResourceKind::ServiceConnection => "service-connections",
            ResourceKind::AgentPool => "agent-pools",
        }
    }

    /// Azure's name of the resource type (the checks API's `resource.type`).
    pub fn type_name(self) -> &'static str {
        match self {
            ResourceKind::Environment => "environment",
            ResourceKind::VariableGroup => "variablegroup",
            ResourceKind::SecureFile => "securefile",
            ResourceKind::ServiceConnection => "endpoint",
            ResourceKind::AgentPool => "queue",
        }
    }

    /// How messages name the kind.
    pub fn label(self) -> &'static str {
        match self {
            ResourceKind::Environment => "environment",
            ResourceKind::VariableGroup => "variable group",
            ResourceKind::SecureFile => "secure file",
            ResourceKind::ServiceConnection => "service connection",
            ResourceKind::AgentPool => "agent pool",
        }
    }

    /// The kind whose API segment is `segment`.
    pub fn from_segment(segment: &str) -> Option<ResourceKind> {
        Self::ALL.into_iter().find(|k| k.segment() == segment)
    }

    /// The key a check on the resource `name` is stored under.
    pub fn key(self, name: &str) -> String {
        match self {
            ResourceKind::Environment => name.to_string(),
            other => format!("{}:{name}", other.type_name()),
        }
    }
}

/// The route prefixes of every kind's resources, under which their checks are
/// (`{base}/checks/{kind}`); the environments' keep their `{environment}` parameter.
pub(crate) fn check_bases() -> Vec<String> {
    ResourceKind::ALL
        .into_iter()
        .map(|kind| match kind {
            ResourceKind::Environment => {
                "/api/v1/projects/{project}/environments/{environment}".to_string()
            }
            other => format!("/api/v1/projects/{{project}}/{}/{{name}}", other.segment()),
        })
        .collect()
}

/// The kind and name of a stored key.
pub(crate) fn parse_key(key: &str) -> (ResourceKind, &str) {
    if let Some((kind, name)) = key.split_once(':')
        && let Some(kind) = ResourceKind::ALL
            .into_iter()
            .find(|k| *k != ResourceKind::Environment && k.type_name() == kind)
    {
        return (kind, name);
    }
    (ResourceKind::Environment, key)
}

/// A resource as messages name it: "environment `prod`", "variable group `Secrets`".
pub(crate) fn describe(key: &str) -> String {
    let (kind, name) = parse_key(key);
    format!("{} `{name}`", kind.label())
}

/// Whether any of the keys names a resource other than an environment.
pub(crate) fn any_library_key<'k>(mut keys: impl Iterator<Item = &'k str>) -> bool {
    keys.any(|k| parse_key(k).0 != ResourceKind::Environment)
}

/// The keys of the resources the jobs of `stage` use: the environments they deploy to and, when
/// `library` is set, the variable groups, secure files and service connections they name and the
/// agent pools their agent jobs run in (agentless jobs use no pool).
pub(crate) fn stage_resources(jobs: &[Job], stage: &str, library: bool) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut add = |key: String| {
        if !keys.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
            keys.push(key);
        }
    };
    for job in jobs.iter().filter(|j| j.stage_name == stage) {
        if let Some(environment) = job.environment.as_deref() {
            add(ResourceKind::Environment.key(environment));
        }
        if !library {
            continue;
        }
        for group in crate::library::groups_of_spec(&job.spec) {
            add(ResourceKind::VariableGroup.key(&group));
        }
        for file in crate::secure_files::secure_files_of_row(job) {
            add(ResourceKind::SecureFile.key(&file));
        }
        for connection in crate::connections::connections_of_row(job) {
            add(ResourceKind::ServiceConnection.key(&connection));
        }
        if !crate::agentless::is_agentless(job) {
            add(ResourceKind::AgentPool.key(crate::agents::job_pool(job)));
        }
    }
    keys
}

/// The resource a checks route names: `/api/v1/projects/{project}/{segment}/{name}/checks/...`.
pub(crate) struct ResourcePath {
    pub project: String,
    pub kind: ResourceKind,
    pub name: String,
}

impl ResourcePath {
    /// The key its checks are stored under.
    pub fn key(&self) -> String {
        self.kind.key(&self.name)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ResourcePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((project, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        // The route's own template says which collection it is (its sixth segment).
        let kind = parts
            .extensions
            .get::<MatchedPath>()
            .and_then(|m| {
                m.as_str()
                    .split('/')
                    .nth(5)
                    .and_then(ResourceKind::from_segment)
            })
            .ok_or_else(|| ApiError::internal("a checks route outside a resource collection"))?;
        Ok(ResourcePath {
            project,
            kind,
            name,
        })
    }
}

/// A 404 unless the library resource a check is put on exists in the project (environments are
/// created by their first deployment and agent pools by their agents, so any valid name does).
pub(crate) async fn require_exists(state: &AppState, project_id: i64, key: &str) -> ApiResult<()> {
    let (kind, name) = parse_key(key);
    let found = match kind {
        ResourceKind::Environment | ResourceKind::AgentPool => true,
        ResourceKind::VariableGroup => state
            .store
            .variable_groups(project_id)
            .await?
            .iter()
            .any(|g| g.name.eq_ignore_ascii_case(name)),
        ResourceKind::SecureFile => state
            .store
            .secure_files(project_id)
            .await?
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name)),
        ResourceKind::ServiceConnection => state
            .store
            .service_connections(project_id)
            .await?
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name)),
    };
    if found {
        Ok(())
    } else {
        Err(ApiError::not_found(describe(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_environments_keep_their_names() {
        for kind in ResourceKind::ALL {
            let key = kind.key("Prod Secrets");
            assert_eq!(parse_key(&key), (kind, "Prod Secrets"));
            assert_eq!(ResourceKind::from_segment(kind.segment()), Some(kind));
        }
        assert_eq!(ResourceKind::Environment.key("prod"), "prod");
        assert_eq!(
            describe("variablegroup:Secrets"),
            "variable group `Secrets`"
        );
        assert_eq!(describe("queue:build"), "agent pool `build`");
        assert_eq!(describe("prod"), "environment `prod`");
        // An unknown prefix is not a resource type: the whole key is an environment's name.
        assert_eq!(parse_key("x:y"), (ResourceKind::Environment, "x:y"));
        assert!(any_library_key(["prod", "endpoint:pp"].into_iter()));
        assert!(!any_library_key(["prod", "test"].into_iter()));
    }

    fn job(stage: &str, spec: &str, pool: Option<&str>, environment: Option<&str>) -> Job {
        Job {
            stage_name: stage.into(),
            spec: spec.into(),
            pool: pool.map(str::to_string),
            environment: environment.map(str::to_string),
            ..Job::default()
        }
    }

    #[test]
    fn a_stage_uses_its_jobs_environments_groups_files_connections_and_pools() {
        let jobs = [
            job(
                "Deploy",
                r#"{"job":{"kind":"deployment"},"variables":[{"kind":"group","name":"Secrets","scope":"pipeline"}],"connections":["pp"],"secureFiles":["key.pem"]}"#,
                Some("build"),
                Some("prod"),
            ),
            job("Deploy", r#"{"job":{"kind":"server"}}"#, None, None),
            job("Build", r#"{"job":{"kind":"job"}}"#, None, None),
        ];
        assert_eq!(
            stage_resources(&jobs, "Deploy", true),
            [
                "prod",
                "variablegroup:Secrets",
                "securefile:key.pem",
                "endpoint:pp",
                "queue:build"
            ]
        );
        assert_eq!(stage_resources(&jobs, "Deploy", false), ["prod"]);
        assert_eq!(stage_resources(&jobs, "Build", true), ["queue:default"]);
    }
}
