//! The p4lb CNI plugin: wires a pod to a switch port and registers it with the controller.
