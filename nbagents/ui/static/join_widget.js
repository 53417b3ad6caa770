// The join widget's front end: asks the kernel for the join page when it is shown and runs it in a frame.
//
// The page (with its short-lived access token) travels as a custom widget message, never as widget state,
// so a saved notebook holds neither the token nor the ~600 KB page. The frame may use the microphone
// (allow="microphone"); where the frontend forbids it (e.g. VS Code's output frames), the page says so and
// "open in a browser tab" runs the same page in a tab of its own.

function render({ model, el }) {
  el.classList.add("nbagents-join");
  const bar = document.createElement("div");
  bar.className = "nbagents-join-bar";
  bar.style.cssText = "display:flex;gap:12px;align-items:center;font:12px system-ui,sans-serif;color:#555;margin:2px 0";
  const status = document.createElement("span");
  status.className = "nbagents-join-status";
  status.textContent = "asking the kernel for a token…";
  const open = document.createElement("a");
  open.className = "nbagents-join-open";
  open.textContent = "open in a browser tab";
  open.href = "#";
  open.title = "the same page in its own tab (where an output frame may not use the microphone); this frame then leaves";
  open.style.display = "none";
  bar.append(status, open);

  const frame = document.createElement("iframe");
  frame.className = "nbagents-join-frame";
  frame.setAttribute("allow", "microphone; autoplay");
  frame.setAttribute("title", "talk to the agent");
  frame.style.cssText = "width:100%;border:1px solid #ccc;border-radius:4px;height:" + (model.get("height") || "125px");
  el.append(bar, frame);

  let pageUrl = null;
  const onMessage = (message) => {
    if (!message || typeof message !== "object") return;
    if (message.type === "page") {
      frame.srcdoc = message.html;
      if (pageUrl) URL.revokeObjectURL(pageUrl);
      pageUrl = URL.createObjectURL(new Blob([message.html], { type: "text/html" }));
      open.style.display = "";
      status.textContent = "token issued by the kernel (valid " + message.ttl_minutes + " min, not saved in the notebook)";
    } else if (message.type === "error") {
      status.textContent = "";
      const error = document.createElement("div");
      error.className = "nbagents-join-error";
      error.style.cssText = "color:#b00020;white-space:pre-wrap;font:13px system-ui,sans-serif";
      error.textContent = message.message;
      frame.replaceWith(error);
    }
  };
  open.addEventListener("click", (event) => {
    event.preventDefault();
    if (!pageUrl) return;
    const tab = window.open(pageUrl, "_blank");
    if (!tab) {
      status.textContent = "the browser blocked the new tab: allow pop-ups for this page, or write nbagents.ui.join_page(job) to a file and open it";
      return;
    }
    frame.srcdoc = "<p style='font:13px system-ui,sans-serif;color:#555'>Joined from a browser tab instead.</p>";
  });
  model.on("msg:custom", onMessage);
  model.send({ type: "page-request" });
  return () => {
    model.off("msg:custom", onMessage);
    frame.srcdoc = "";
    if (pageUrl) URL.revokeObjectURL(pageUrl);
  };
}

export default { render };
