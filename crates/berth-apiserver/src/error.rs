//! Error kinds and the per-service tables that turn them into AWS errors (DESIGN §2, "Errors").
//!
//! A handler says *what* went wrong — a [`ErrorKind`] and the kind of resource it concerns
//! (`"Cluster"`, `"Repository"`, ...) — and the service's [`ErrorTable`] says how the service's
//! API names it on the wire (the `__type` of awsJson and rpcv2Cbor, the query protocol's code
//! via the service's [`crate::QuerySupport`]) and with which HTTP status. One table per
//! service, so that "not found" is `ClusterNotFoundException` in ECS,
//! `RepositoryNotFoundException` in ECR and `ResourceNotFoundException` in CloudWatch Logs
//! without any handler writing those names.
//!
//! How a handler uses it (handlers return `Result<_, AwsError>`):
//!
//! ```
//! use berth_apiserver::error::{ApiError, ErrorKind, ErrorTable};
//! use berth_api::proto::AwsError;
//!
//! static ECS: ErrorTable = ErrorTable {
//!     rows: &[(ErrorKind::NotFound, Some("Cluster"), "ClusterNotFoundException", 400)],
//!     defaults: &[(ErrorKind::InvalidArgument, "InvalidParameterException", 400)],
//! };
//!
//! fn describe(found: bool) -> Result<(), AwsError> {
//!     if !found {
//!         // Either build the AWS error directly ...
//!         return Err(ECS.error(ErrorKind::NotFound, Some("Cluster"), "Cluster not found."));
//!     }
//!     // ... or carry an `ApiError` (a domain crate's `<Domain>Error` converts into one) and
//!     // let the table map it at the edge.
//!     let e = ApiError::new(ErrorKind::InvalidArgument, "count must be positive");
//!     Err(ECS.map(&e))
//! }
//! let e = describe(false).unwrap_err();
//! assert_eq!((e.status, e.error_type.as_str()), (400, "ClusterNotFoundException"));
//! ```

use berth_api::proto::AwsError;

/// What went wrong, independent of any service's or protocol's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named resource does not exist (or is no longer active).
    NotFound,
    /// A resource of that name exists already.
    AlreadyExists,
    /// A parameter is missing, malformed or out of range.
    InvalidArgument,
    /// The request conflicts with the resource's current state (in use, not empty, a
    /// concurrent change).
    Conflict,
    /// A quota would be exceeded.
    LimitExceeded,
    /// The caller may not do this.
    Unauthorized,
    /// berth (or the service) does not support this.
    Unsupported,
    /// The request body is not the shape the operation takes.
    Serialization,
    /// berth's own fault (a store or filesystem failure, a bug).
    Internal,
}

/// One service's mapping from `(kind, resource)` to the AWS error type and HTTP status.
///
/// Lookup order: the first row of [`ErrorTable::rows`] with this kind and this resource; else
/// the first row with this kind and resource `None`; else [`ErrorTable::defaults`] for the
/// kind; else the generic fallback of [`ErrorKind`] ([`generic`]).
#[derive(Debug)]
pub struct ErrorTable {
    /// `(kind, resource, __type, HTTP status)`; resource `None` matches any resource.
    pub rows: &'static [(ErrorKind, Option<&'static str>, &'static str, u16)],
    /// `(kind, __type, HTTP status)`: the service's name for a kind whatever the resource.
    pub defaults: &'static [(ErrorKind, &'static str, u16)],
}

/// The fallback when a service's table has no row for `kind`: names every AWS service shares
/// (`ValidationException`, `AccessDeniedException`, ..., `ServerException` with 500).
pub fn generic(kind: ErrorKind) -> (&'static str, u16) {
    match kind {
        ErrorKind::NotFound => ("ResourceNotFoundException", 400),
        ErrorKind::AlreadyExists => ("ResourceAlreadyExistsException", 400),
        ErrorKind::InvalidArgument => ("ValidationException", 400),
        ErrorKind::Conflict => ("ConflictException", 409),
        ErrorKind::LimitExceeded => ("LimitExceededException", 400),
        ErrorKind::Unauthorized => ("AccessDeniedException", 403),
        ErrorKind::Unsupported => ("UnsupportedOperationException", 400),
        ErrorKind::Serialization => ("SerializationException", 400),
        ErrorKind::Internal => ("ServerException", 500),
    }
}

impl ErrorTable {
    /// The AWS `__type` and HTTP status of `kind` concerning a `resource` (see the lookup order
    /// on [`ErrorTable`]).
    pub fn lookup(&self, kind: ErrorKind, resource: Option<&str>) -> (&'static str, u16) {
        let row = |want: Option<&str>| {
            self.rows
                .iter()
                .find(|(k, r, _, _)| *k == kind && *r == want)
                .map(|&(_, _, t, s)| (t, s))
        };
        resource
            .and_then(|r| row(Some(r)))
            .or_else(|| row(None))
            .or_else(|| {
                self.defaults
                    .iter()
                    .find(|(k, _, _)| *k == kind)
                    .map(|&(_, t, s)| (t, s))
            })
            .unwrap_or_else(|| generic(kind))
    }

    /// The AWS error for `kind` concerning `resource`, with `message`.
    pub fn error(
        &self,
        kind: ErrorKind,
        resource: Option<&str>,
        message: impl Into<String>,
    ) -> AwsError {
        let (error_type, status) = self.lookup(kind, resource);
        AwsError {
            status,
            error_type: error_type.to_string(),
            message: message.into(),
        }
    }

    /// The AWS error of an [`ApiError`].
    pub fn map(&self, e: &ApiError) -> AwsError {
        self.error(e.kind, e.resource, e.message.clone())
    }
}

/// A service-neutral error: what went wrong, about which kind of resource, in words. Domain
/// errors (`ControlError`, `RegistryError`, ...) convert into it; a service's [`ErrorTable`]
/// turns it into the wire error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The kind of resource it concerns (`"Cluster"`, `"Service"`, `"Repository"`), if any.
    pub resource: Option<&'static str>,
    /// The message the caller reads.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` about no resource in particular.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            resource: None,
            message: message.into(),
        }
    }

    /// The same error, about a `resource` kind.
    pub fn about(mut self, resource: &'static str) -> Self {
        self.resource = Some(resource);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static T: ErrorTable = ErrorTable {
        rows: &[
            (
                ErrorKind::NotFound,
                Some("Cluster"),
                "ClusterNotFoundException",
                400,
            ),
            (
                ErrorKind::NotFound,
                Some("Service"),
                "ServiceNotFoundException",
                400,
            ),
            (ErrorKind::NotFound, None, "ClientException", 400),
        ],
        defaults: &[
            (ErrorKind::InvalidArgument, "InvalidParameterException", 400),
            (ErrorKind::NotFound, "NeverReached", 400),
        ],
    };

    #[test]
    fn rows_then_any_resource_then_defaults_then_generic() {
        assert_eq!(
            T.lookup(ErrorKind::NotFound, Some("Service")),
            ("ServiceNotFoundException", 400)
        );
        assert_eq!(
            T.lookup(ErrorKind::NotFound, Some("Cluster")),
            ("ClusterNotFoundException", 400)
        );
        assert_eq!(
            T.lookup(ErrorKind::NotFound, Some("TaskDefinition")),
            ("ClientException", 400)
        );
        assert_eq!(
            T.lookup(ErrorKind::NotFound, None),
            ("ClientException", 400)
        );
        assert_eq!(
            T.lookup(ErrorKind::InvalidArgument, Some("Cluster")),
            ("InvalidParameterException", 400)
        );
        assert_eq!(
            T.lookup(ErrorKind::Internal, None),
            ("ServerException", 500)
        );
        assert_eq!(
            T.lookup(ErrorKind::Unauthorized, None),
            ("AccessDeniedException", 403)
        );
    }

    #[test]
    fn api_errors_map_with_their_message() {
        let e = T.map(&ApiError::new(ErrorKind::NotFound, "Cluster not found.").about("Cluster"));
        assert_eq!(
            e,
            AwsError::client("ClusterNotFoundException", "Cluster not found.")
        );
        let e = T.error(ErrorKind::Internal, None, "disk full");
        assert_eq!(e, AwsError::server("disk full"));
    }
}
