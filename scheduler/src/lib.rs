//! Drover's scheduler: places pods and gangs on nodes and devices.
