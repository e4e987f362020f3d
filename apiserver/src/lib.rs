//! Drover's API server: authentication, admission, validation, persistence and watch.

pub mod storage;
