//! The subresources a create stands for: `pods/{name}/binding` (the scheduler's placement) and
//! TokenReview (a node agent checking a token; answered, never stored). The `status`
//! subresource is an update or patch ([`super::write`]).

use bytes::Bytes;
use drover_api::authentication::TokenReview;
use drover_api::core::{Binding, Node, Pod};
use drover_api::error::Reason;
use drover_api::{Resource, Status};

use super::ApiService;
use super::commit::Outcome;
use super::request::{Bind, ReviewToken};
use crate::cache::kind_id;
use crate::kinds::downcast;

impl ApiService {
    /// A TokenReview: answered, never stored (see [`crate::agent_credential`]).
    pub(super) fn review_token(&self, req: &ReviewToken) -> Result<Bytes, Status> {
        let t = &req.target;
        if !t.name.is_empty() || !t.subresource.is_empty() || !t.namespace.is_empty() {
            return Err(Status::new(
                Reason::MethodNotAllowed,
                "a TokenReview is a POST to /apis/authentication.k8s.io/v1/tokenreviews",
            ));
        }
        let review: TokenReview = crate::kinds::decode_typed(&req.body)?;
        review
            .validate()
            .map_err(|errs| Status::invalid(TokenReview::KIND, "", &errs))?;
        let mut answer = self
            .agents
            .review(&self.auth, &review, std::time::SystemTime::now());
        answer.set_type_meta();
        serde_json::to_vec(&answer)
            .map(Bytes::from)
            .map_err(|e| Status::internal(format!("cannot encode the TokenReview: {e}")))
    }

    /// `pods/{name}/binding`: assigns the pod to a node and devices.
    pub(super) async fn bind(&self, req: &Bind) -> Result<Bytes, Status> {
        let r = self.resolve(&req.target)?;
        Self::need_namespace(&r)?;
        Self::need_name(&r)?;
        let binding: Binding = serde_json::from_slice(&req.body)
            .map_err(|e| Status::bad_request(format!("cannot decode Binding: {e}")))?;
        if !binding.metadata.name.is_empty() && binding.metadata.name != r.name {
            return Err(Status::bad_request(format!(
                "metadata.name {:?} does not match the pod on the request ({:?})",
                binding.metadata.name, r.name
            )));
        }
        binding
            .validate()
            .map_err(|e| Status::invalid("Binding", &r.name, &e))?;
        let node_kind = kind_id("", Node::PLURAL);
        if self
            .cache
            .get(&node_kind, "", &binding.target.name)
            .is_none()
        {
            return Err(Status::not_found("nodes", &binding.target.name));
        }
        let old = self.get_cached(&r)?;
        let pod: &Pod = downcast(&*old.object)?;
        if pod.meta().deletion_timestamp.is_some() {
            return Err(Status::conflict(
                "pods",
                &r.name,
                "the pod is being deleted",
            ));
        }
        let mut new = pod.clone();
        binding.apply_to(&mut new).map_err(|e| {
            if new.is_bound() {
                Status::conflict(
                    "pods",
                    &r.name,
                    &format!("pod is already assigned to node {:?}", pod.spec.node_name),
                )
            } else {
                Status::invalid("Binding", &r.name, &e)
            }
        })?;
        // As Kubernetes' binding does: the pod says it is scheduled.
        new.status.conditions.retain(|c| c.type_ != "PodScheduled");
        new.status.conditions.push(drover_api::meta::Condition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(chrono::Utc::now()),
            ..Default::default()
        });
        // Binding changes spec fields a plain update may not: store the pod as bound.
        let p = crate::write::encode(new, false)?;
        match self.put(&r, &p, old.rv).await? {
            Outcome::Written(json) => Ok(json),
            Outcome::Conflict => Err(Status::conflict(
                "pods",
                &r.name,
                "the pod changed while it was being bound; try again",
            )),
        }
    }
}
