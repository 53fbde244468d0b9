"""The restricted Pod Security Standard, as a check of pod specs (tests only).

Written from the standard's text (kubernetes.io/docs/concepts/security/pod-security-
standards, v1.30): the baseline controls (host namespaces, HostProcess, privileged
containers, capabilities, hostPath volumes, host ports, AppArmor, SELinux, /proc mount
type, seccomp, sysctls) plus the restricted ones (volume types, privilege escalation,
non-root, non-root user, seccomp set, capabilities dropped). A namespace labelled
``pod-security.kubernetes.io/enforce: restricted`` admits only pods this finds nothing
in. Used on what the kubernetes substrate creates and on deploy/k8s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["pod_template", "restricted_violations"]


_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def _selinux_violations(where: str, options: dict[str, Any] | None) -> list[str]:
    options = options or {}
    out = []
    if options.get("type", "") not in _SELINUX_TYPES:
        out.append(f"{where}: seLinuxOptions.type {options['type']!r}")
    for key in ("user", "role"):
        if options.get(key):
            out.append(f"{where}: seLinuxOptions.{key} is set")
    return out


def _apparmor_violations(where: str, profile: dict[str, Any] | None) -> list[str]:
    if profile is not None and profile.get("type") not in ("RuntimeDefault", "Localhost"):
        return [f"{where}: appArmorProfile {profile.get('type')!r}"]
    return []


def restricted_violations(pod: dict, annotations: Mapping[str, str] | None = None) -> list[str]:
    """What in ``pod`` (a PodSpec) breaks the restricted Pod Security Standard.

    Args:
        pod: the PodSpec (a template's ``spec``).
        annotations: the pod's annotations (AppArmor's older form lives there).
    """
    out: list[str] = []
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            out.append(f"annotation {key}: {value!r}")
    sc = pod.get("securityContext") or {}
    # Baseline: host namespaces, HostProcess, sysctls, SELinux, AppArmor, seccomp.
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"pod: {key}")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("pod: windowsOptions.hostProcess")
    for sysctl in sc.get("sysctls") or []:
        if sysctl["name"] not in _SAFE_SYSCTLS:
            out.append(f"pod: sysctl {sysctl['name']}")
    out += _selinux_violations("pod", sc.get("seLinuxOptions"))
    out += _apparmor_violations("pod", sc.get("appArmorProfile"))
    pod_seccomp = (sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in _SECCOMP_OK:
        out.append(f"pod: seccompProfile {pod_seccomp!r}")
    # Restricted: volume types (hostPath among the forbidden), non-root, seccomp set.
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            out.append(f"volume {volume['name']}: {sorted(kinds - _RESTRICTED_VOLUMES)}")
    if sc.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    containers = [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]
    for c in containers:
        where = f"container {c['name']}"
        csc = c.get("securityContext") or {}
        if csc.get("privileged"):
            out.append(f"{where}: privileged")
        if (csc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: windowsOptions.hostProcess")
        if csc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount {csc['procMount']!r}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
        out += _selinux_violations(where, csc.get("seLinuxOptions"))
        out += _apparmor_violations(where, csc.get("appArmorProfile"))
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        non_root = csc.get("runAsNonRoot")
        if non_root is False or (non_root is None and sc.get("runAsNonRoot") is not True):
            out.append(f"{where}: runAsNonRoot is not true")
        if csc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser 0")
        seccomp = (csc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in _SECCOMP_OK:
            out.append(f"{where}: seccompProfile {seccomp!r}")
        if seccomp is None and pod_seccomp not in _SECCOMP_OK:
            out.append(f"{where}: no seccompProfile (RuntimeDefault or Localhost)")
        capabilities = csc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            out.append(f"{where}: capabilities do not drop ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            out.append(f"{where}: adds capabilities {sorted(added)}")
    return out


#: Kinds whose ``spec.template`` is a pod template, and where CronJobs keep theirs.
_TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_template(obj: Mapping[str, Any]) -> tuple[dict, dict[str, str]] | None:
    """The PodSpec and pod annotations of a workload object (Pod, Deployment, Job,
    CronJob...); None for an object that makes no pods."""
    kind = obj.get("kind")
    if kind == "Pod":
        return obj["spec"], dict((obj.get("metadata") or {}).get("annotations") or {})
    if kind == "CronJob":
        obj = obj["spec"]["jobTemplate"]
        kind = "Job"
    if kind in _TEMPLATED:
        template = obj["spec"]["template"]
        return template["spec"], dict((template.get("metadata") or {}).get("annotations") or {})
    return None
