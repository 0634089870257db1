// Hearth's status page: one snapshot a second over SSE (/status/events), drawn without a reload.
"use strict";

const query = new URLSearchParams(location.search);
const passOn = new URLSearchParams();
for (const name of ["key", "prompts"]) {
  if (query.has(name)) passOn.set(name, query.get(name));
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : child === null || child === undefined ? "" : String(child));
  }
  return node;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  return delta < 60 ? `${Math.round(delta)} s ago` : `${Math.round(delta / 60)} min ago`;
}

function doing(job) {
  if (job.phase === "prefilling") return `prefilling ${job.prefilled[0]} of ${job.prefilled[1]} tokens`;
  if (job.phase === "decoding") {
    const rate = job.tokens_per_second ? ` at ${job.tokens_per_second} tokens/s` : "";
    return `decoding, ${job.output_tokens} tokens${rate}`;
  }
  return job.phase;
}

function drawQueues(status) {
  const cards = Object.entries(status.queues).map(([name, queue]) =>
    element("div", { class: "card", "data-queue": name },
      element("b", {}, queue.depth), `${name} queued`,
      element("div", { class: "dim" }, queue.depth ? `oldest ${queue.oldest_age_seconds.toFixed(1)} s` : "")));
  cards.push(element("div", { class: "card" }, element("b", {}, status.running), "running"));
  cards.push(element("div", { class: "card" }, element("b", {}, status.suspended), "suspended"));
  document.getElementById("queues").replaceChildren(...cards);
}

function drawWorkers(status) {
  const blocks = status.workers.map((worker) => {
    const jobs = worker.jobs.map((job) => element("tr", { "data-job": job.id },
      element("td", { class: "id" }, job.id.slice(0, 12)), element("td", {}, job.queue),
      element("td", {}, job.model.split("/").pop()), element("td", { class: "doing" }, doing(job))));
    const caches = Object.entries(status.cache[worker.name] || {}).map(([model, stats]) =>
      element("div", { class: "dim" }, `cache ${model.split("/").pop()}: hit rate ` +
        (stats.hit_rate === null ? "-" : `${Math.round(stats.hit_rate * 100)}%`) +
        `, ${(stats.bytes / 1e6).toFixed(1)} of ${(stats.budget_bytes / 1e6).toFixed(0)} MB`));
    const table = jobs.length ? element("table", {}, element("tbody", {}, ...jobs)) : element("div", { class: "dim" }, "idle");
    return element("div", { class: "worker" }, element("b", {}, `worker ${worker.name} `),
      element("span", { class: "dim" }, `pid ${worker.pid} on ${worker.host || "?"}, ` +
        `${(worker.models || []).join(", ")}, ${worker.jobs.length} of ${worker.slots ?? "?"} slots, ` +
        `${worker.held_prefixes ?? 0} prompt prefixes held`), table, ...caches);
  });
  if (!blocks.length) blocks.push(element("div", { class: "dim" }, "no worker alive: start one with `hearth worker`"));
  document.getElementById("workers").replaceChildren(...blocks);
}

function drawRecent(status) {
  document.body.classList.toggle("prompts", Boolean(status.prompts));
  const rows = status.recent.map((job) => element("tr", { "data-job": job.id },
    element("td", { class: "id" }, job.id.slice(0, 12)), element("td", {}, job.queue), element("td", {}, job.model),
    element("td", { class: `outcome-${job.outcome}` }, job.outcome), element("td", {}, job.output_tokens ?? ""),
    element("td", { class: "dim" }, ago(job.ended_at)), element("td", { class: "prompt" }, job.prompt ?? "")));
  document.getElementById("recent").replaceChildren(...rows);
}

function drawChart(status) {
  const now = Math.floor(status.time);
  const perSecond = new Map(status.throughput);
  const values = [];
  for (let second = now - 599; second <= now; second++) values.push(perSecond.get(second) || 0);
  const peak = Math.max(1, ...values);
  const points = values.map((value, i) => `${i},${(118 - (value / peak) * 114).toFixed(1)}`);
  const line = document.getElementById("line");
  line.setAttribute("points", points.join(" "));
  document.getElementById("chart").setAttribute("viewBox", "0 0 599 120");
  document.getElementById("peak").textContent = `peak ${peak} tokens/s`;
  const lastMinute = values.slice(-60).reduce((a, b) => a + b, 0) / 60;
  document.getElementById("rate").textContent = `${lastMinute.toFixed(1)} tokens/s over the last minute`;
}

function draw(status) {
  drawQueues(status);
  drawWorkers(status);
  drawRecent(status);
  drawChart(status);
  document.getElementById("connection").textContent = `updated ${new Date(status.time * 1000).toLocaleTimeString()}`;
}

const source = new EventSource("/status/events" + (passOn.toString() ? `?${passOn}` : ""));
source.addEventListener("snapshot", (event) => draw(JSON.parse(event.data)));
source.onerror = () => { document.getElementById("connection").textContent = "reconnecting…"; };
