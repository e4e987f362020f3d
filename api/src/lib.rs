//! Drover's resource model, validation, quantities, selectors, the gRPC service definitions and the typed client with informers.
