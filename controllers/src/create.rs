//! Creating objects. `Api::create` in `drover_api` addresses the object by name, which the API
//! server refuses for named objects ("create is a POST to the collection"); until that is fixed
//! there, controllers create through the collection here.

use drover_api::Resource;
use drover_api::client::{Client, ClientError, target};

/// Creates `obj` in its namespace (POST to the collection); returns the stored object.
pub async fn create<T: Resource>(client: &Client, obj: &T) -> Result<T, ClientError> {
    let mut o = obj.clone();
    o.set_type_meta();
    let ns = o.meta().namespace.clone();
    let body = serde_json::to_vec(&o).map_err(|e| ClientError::Encode(e.to_string()))?;
    let out = client
        .create_raw(target(&T::info(), Some(&ns), "", ""), body)
        .await?;
    Ok(serde_json::from_slice(&out)?)
}
