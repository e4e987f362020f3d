//! Drover's node agent (the kubelet).
