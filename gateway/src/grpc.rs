//! Envoy's rate limit service API over gRPC:
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, with the protos `envoy-types`
//! generates (re-exported as [`crate::envoy_types`], so clients build from the same ones).
//!
//! Request: `domain`; `descriptors` (entries, a per-descriptor `limit` override, a
//! per-descriptor `hits_addend` where 0 checks without counting); the request's `hits_addend`
//! (0 or unset counts 1). Response: `overall_code`, one status per descriptor (`code`,
//! `current_limit`, `limit_remaining`, `duration_until_reset`) and `response_headers_to_add`
//! with the IETF headers ([`crate::headers`]).

use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        config::core::v3::HeaderValue,
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor},
        service::ratelimit::v3::{
            RateLimitRequest, RateLimitResponse,
            rate_limit_response::{self, DescriptorStatus as PbStatus},
            rate_limit_service_server::{
                RateLimitService as RateLimitServiceApi, RateLimitServiceServer,
            },
        },
    },
    google::protobuf,
};
use tonic::{Request, Status};

use crate::{
    request::{Entry, RequestDescriptor},
    service::{CheckError, RateLimitService, Response},
    unit::Unit,
};

/// The response metadata carrying [`Response::decided_at_us`], sent when the request carries
/// [`ASK_DECIDED_AT`] (any value). Opt-in: a header whose value changes on every response
/// cannot be indexed by HPACK, so it would cost every caller that does not read it.
pub const DECIDED_AT: &str = "sluice-decided-at-us";

/// The request metadata that asks for [`DECIDED_AT`] in the response.
pub const ASK_DECIDED_AT: &str = "sluice-ask-decided-at";

impl Entry for rate_limit_descriptor::Entry {
    fn key(&self) -> &str {
        &self.key
    }
    fn value(&self) -> &str {
        &self.value
    }
}

/// The tonic service: `RateLimitServiceServer::new(GrpcService::new(service))`, or
/// [`GrpcService::server`].
#[derive(Debug, Clone)]
pub struct GrpcService {
    service: Arc<RateLimitService>,
}

impl GrpcService {
    /// Answer with `service`.
    pub fn new(service: Arc<RateLimitService>) -> Self {
        Self { service }
    }

    /// The tonic server for a `tonic::transport::Server`.
    pub fn server(service: Arc<RateLimitService>) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(Self::new(service))
    }
}

/// The request's descriptors as the matcher reads them; a bad request is refused.
fn descriptors(
    request: &RateLimitRequest,
) -> Result<Vec<RequestDescriptor<'_, rate_limit_descriptor::Entry>>, CheckError> {
    request
        .descriptors
        .iter()
        .map(|d: &RateLimitDescriptor| {
            if d.is_negative_hits {
                return Err(CheckError::BadRequest(
                    "is_negative_hits is not supported: a denied request is never charged, so there is nothing to give back".to_owned(),
                ));
            }
            let mut rd = RequestDescriptor::new(&d.entries);
            if let Some(o) = &d.limit {
                let unit = Unit::from_envoy_number(o.unit).ok_or_else(|| {
                    CheckError::BadRequest(format!(
                        "descriptor limit override has unit {} (UNKNOWN or undefined)",
                        o.unit
                    ))
                })?;
                rd = rd.with_override(o.requests_per_unit, unit);
            }
            if let Some(h) = &d.hits_addend {
                rd = rd.with_hits_addend(h.value);
            }
            Ok(rd)
        })
        .collect()
}

/// A [`Response`] as Envoy's message, with `headers` as `response_headers_to_add`.
pub fn to_proto(response: &Response, headers: Vec<(&'static str, String)>) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: response.overall_code.envoy_number(),
        statuses: response
            .statuses
            .iter()
            .map(|s| PbStatus {
                code: s.code.envoy_number(),
                current_limit: s
                    .current_limit
                    .as_ref()
                    .map(|l| rate_limit_response::RateLimit {
                        name: l.name.clone(),
                        requests_per_unit: l.requests_per_unit,
                        unit: l.unit.map_or(0, Unit::envoy_number),
                    }),
                limit_remaining: s.limit_remaining,
                duration_until_reset: s.duration_until_reset.map(|d| protobuf::Duration {
                    seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                }),
                ..Default::default()
            })
            .collect(),
        response_headers_to_add: headers
            .into_iter()
            .map(|(key, value)| HeaderValue {
                key: key.to_owned(),
                value,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl RateLimitServiceApi for GrpcService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, Status> {
        let ask_decided_at = request.metadata().contains_key(ASK_DECIDED_AT);
        let request = request.into_inner();
        let result = match descriptors(&request) {
            Ok(descriptors) => {
                self.service
                    .check(
                        &request.domain,
                        &descriptors,
                        u64::from(request.hits_addend),
                    )
                    .await
            }
            Err(e) => {
                self.service.metrics().error(e.kind());
                Err(e)
            }
        };
        match result {
            Ok(response) => {
                let headers = response.headers(self.service.options().headers);
                let mut reply = tonic::Response::new(to_proto(&response, headers));
                if let Some(at) = response.decided_at_us.filter(|_| ask_decided_at) {
                    reply.metadata_mut().insert(DECIDED_AT, at.into());
                }
                Ok(reply)
            }
            Err(CheckError::BadRequest(message)) => Err(Status::invalid_argument(message)),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}
