//! Device discovery, health and allocation: NVIDIA (NVML), CPU/NUMA topology, simulated devices.
