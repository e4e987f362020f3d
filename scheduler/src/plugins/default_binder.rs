//! DefaultBinder: writes a placement through `pods/{name}/binding`, with the device ids.

use drover_api::core::{Binding, Pod};
use drover_client::Client;
use futures::future::BoxFuture;

use crate::cache::{Placement, PodInfo};
use crate::framework::{Bind, BindError};

pub const NAME: &str = "DefaultBinder";

#[derive(Debug, Default)]
pub struct DefaultBinder;

impl Bind for DefaultBinder {
    fn bind<'a>(
        &'a self,
        client: &'a Client,
        pod: &'a PodInfo,
        placement: &'a Placement,
    ) -> BoxFuture<'a, Result<(), BindError>> {
        Box::pin(async move {
            let binding = Binding::new(
                pod.namespace(),
                pod.name(),
                &*placement.node_name,
                placement.devices.clone(),
            );
            client
                .namespaced::<Pod>(pod.namespace())
                .create_subresource_ack(pod.name(), "binding", &binding)
                .await
                .map_err(|source| BindError::Api {
                    pod: pod.key.to_string(),
                    node: placement.node_name.to_string(),
                    source,
                })
        })
    }
}
