// The boot doctor's timelines, shared by the dashboard's Boot activity card and the machine
// page's Boot timeline. Timelines per MAC from dragonfly/bootlog.py: {mac, steps: [{at,
// last_at, step, label, count, detail}], diagnosis}.

import { APP, PAGE, SERVER_SKEW } from "./data.js";
import { h } from "./dom.js";
import { fmt } from "./fmt.js";

// DHCP client architecture codes (option 93) -> names, named once in Python.
const ARCH_NAMES = APP.arch_names || {};
export const ERROR_STEPS = new Set(["tftp_error", "dhcp_ignored", "dhcp_nak", "dhcp_decline"]);
export const DONE_STEPS = new Set(["checkin", "heartbeat"]);
// What should have come next, for the "never happened" line under a stalled chain.
export const NEXT_STEP = {
  dhcp_discover: "An offer from Dragonfly", dhcp_request: "A DHCP acknowledgement",
  dhcp_offer: "The loader download", dhcp_ack: "The loader download", tftp: "The iPXE script request",
  http_loader: "The iPXE script request", ipxe_script: "The discovery kernel download",
  kernel: "The initrd download", initrd: "The agent's check-in",
};
const BOOT_EXPECT = PAGE.boot_expect || {};

export const lastStep = (timeline) => timeline.steps[timeline.steps.length - 1];
const mono = (text) => h("span", { class: "mono" }, text);
export const seconds = (s) => (s < 10 ? `${Number(s).toFixed(1)} s` : fmt.eta(s));

/** The few details worth a glance, per step: loader and why, file, size and time, ... */
export function bootFacts(step) {
  const d = step.detail || {};
  const facts = [];
  const file = d.file || d.filename;
  const size = d.bytes ?? d.bytes_sent ?? d.size;
  const took = d.seconds ?? d.duration;
  switch (step.step) {
    case "dhcp_discover": {
      const arch = d.arch_name || ARCH_NAMES[d.arch] || (d.arch != null ? `arch ${d.arch}` : "");
      if (arch) facts.push(arch);
      if (d.ipxe) facts.push("iPXE");
      else if (d.vendor_class && !arch) facts.push(mono(d.vendor_class));
      if (d.relay) facts.push(`via relay ${d.relay}`);
      break;
    }
    case "dhcp_offer": case "dhcp_ack":
      if (d.script) facts.push("its iPXE script");
      else if (d.loader || d.boot_file) facts.push(mono(d.loader || d.boot_file));
      if (d.reason) facts.push(d.reason);
      if (d.yiaddr || d.ip) facts.push(`address ${d.yiaddr || d.ip}`);
      break;
    case "dhcp_request":
      if (d.ip) facts.push(`for ${d.ip}`);
      if (d.ours === false) facts.push("to another server");
      break;
    case "tftp_error":
      if (file) facts.push(mono(file));
      if (d.error) facts.push(d.error);
      break;
    case "ipxe_script":
      if (d.target) facts.push(`boots ${d.target}`);
      else if ("state" in d) facts.push(d.state ? `a ${d.state} machine` : "a new machine: discovery");
      if (d.ip) facts.push(`from ${d.ip}`);
      break;
    case "checkin": case "heartbeat":
      if (d.state) facts.push(d.state);
      if (d.action) facts.push(`told to ${d.action.replace(/_/g, " ")}`);
      if (d.ip) facts.push(`from ${d.ip}`);
      break;
    default:
      if (d.reason) facts.push(d.reason);
  }
  if (["tftp", "http_loader", "kernel", "initrd"].includes(step.step)) {
    if (file || d.loader) facts.push(mono(file || d.loader));
    if (size != null) facts.push(fmt.bytes(size));
    if (took != null) facts.push(`in ${seconds(took)}`);
    if (d.outcome && d.outcome !== "complete") facts.push(d.outcome.replace(/_/g, " "));
  }
  return facts.flatMap((f, i) => (i ? [" · ", f] : [f]));
}

export function stepTone(step, isLast, diagnosis) {
  if (ERROR_STEPS.has(step.step)) return "error";
  if (DONE_STEPS.has(step.step)) return "done";
  if (isLast && diagnosis) return "stopped";
  return "ok";
}

/**
 * The boot doctor diagnoses a stall once time has passed without a next step; nothing is
 * written then, so no event tells us. Ask again (once) when the earliest one may be due.
 */
export function bootDeadlines(refetch) {
  let timer = 0;
  const asked = new Set(); // "mac|step|last_at" already checked once
  return (timelines) => {
    clearTimeout(timer);
    let due = Infinity;
    const keys = [];
    for (const t of timelines) {
      const last = t.steps.length ? lastStep(t) : null;
      const within = last && !t.diagnosis ? BOOT_EXPECT[last.step] : undefined;
      if (within == null) continue;
      const key = `${t.mac}|${last.step}|${last.last_at}`;
      if (asked.has(key)) continue;
      const since = last.step === "dhcp_discover" ? last.at : last.last_at;
      const at = (since + within + 1 - SERVER_SKEW) * 1000;
      keys.push([key, at]);
      due = Math.min(due, at);
    }
    if (due === Infinity) return;
    timer = setTimeout(() => {
      for (const [key, at] of keys) if (at <= Date.now() + 50) asked.add(key);
      refetch();
    }, Math.max(0, due - Date.now()));
  };
}
