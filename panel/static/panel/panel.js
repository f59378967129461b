// Small progressive enhancements; every page works without them.
(function () {
  "use strict";
  // Copy buttons: <button data-copy="#element-id">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.value || source.textContent;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.setAttribute("aria-live", "polite");
      setTimeout(function () { button.textContent = label; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { source.select(); });
    } else {
      source.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
    }
  });
  // Filter selects (<select data-autosubmit>) apply as soon as they change; in a script, not
  // an onchange attribute, because the Content-Security-Policy allows no inline scripts.
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-autosubmit]");
    if (select && select.form) select.form.submit();
  });
  // A submitted form cannot be submitted twice by a double click.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute("hx-get") || form.hasAttribute("data-playground")) return;
    if (form.method.toLowerCase() !== "post") return;
    if (form.dataset.sent) { event.preventDefault(); return; }
    form.dataset.sent = "1";
    setTimeout(function () { delete form.dataset.sent; }, 5000);
  });
  // The playground: the prompt is sent with fetch and the answer shown as it streams in
  // (Server-Sent Events from the panel). Without this the form posts and the answer streams
  // into a new page.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-playground]") || !window.fetch || !window.TextDecoder) return;
    event.preventDefault();
    if (!form.dataset.busy) sendPrompt(form);
  });

  function sendPrompt(form) {
    var output = document.getElementById("playground-output");
    var answer = document.getElementById("answer");
    var status = document.getElementById("answer-status");
    var facts = document.getElementById("answer-facts");
    var slot = document.getElementById("call-result-slot");
    var button = form.querySelector("button[type=submit]");
    var say = function (text, kind) {
      status.textContent = text;
      status.className = kind ? "msg " + kind : "muted";
    };
    form.dataset.busy = "1";
    if (button) button.disabled = true;
    output.hidden = false;
    answer.textContent = "";
    facts.textContent = "";
    slot.innerHTML = "";
    say("Sending…");
    var handle = function (frame) {
      var kind = "", data = "";
      frame.split("\n").forEach(function (line) {
        if (line.indexOf("event: ") === 0) kind = line.slice(7);
        else if (line.indexOf("data: ") === 0) data += line.slice(6);
      });
      if (!kind) return;
      data = data ? JSON.parse(data) : {};
      if (kind === "start") {
        say("Streaming from " + (data.model || "the gateway") + (data.cache === "hit" ? " (from the cache)" : "") + "…");
      } else if (kind === "delta") {
        answer.appendChild(document.createTextNode(data.text));
      } else if (kind === "usage") {
        facts.textContent = "Tokens: " + data.input_tokens + " in / " + data.output_tokens + " out.";
      } else if (kind === "error") {
        say("The gateway refused or failed: " + data.message + (data.request_id ? " (request " + data.request_id + ")" : ""), "error");
      } else if (kind === "end") {
        say("Done" + (data.finish_reason ? " (" + data.finish_reason + ")" : "") + ". Request " + data.request_id + ".", "success");
        if (data.result_url) {
          var poll = document.createElement("div");
          poll.setAttribute("hx-get", data.result_url);
          poll.setAttribute("hx-trigger", "load");
          poll.setAttribute("hx-swap", "outerHTML");
          slot.appendChild(poll);
          if (window.htmx) window.htmx.process(poll);
        }
      }
    };
    var finish = function () {
      delete form.dataset.busy;
      if (button) button.disabled = false;
    };
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { "X-Playground": "stream" },
      credentials: "same-origin",
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (type.indexOf("text/event-stream") !== 0) {
        return response.text().then(function (html) {
          if (response.status === 400) {
            // Field errors: the server sent the form again, with them next to the fields.
            form.outerHTML = html;
            output.hidden = true;
          } else if (response.redirected) {
            say("Your session ended: reload the page to log in again.", "error");
          } else {
            say("The panel answered HTTP " + response.status + ".", "error");
          }
        });
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var pump = function () {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buffer += decoder.decode(chunk.value, { stream: true });
          var cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            handle(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
          return pump();
        });
      };
      return pump();
    }).catch(function (error) {
      say("The connection broke: " + error.message, "error");
    }).then(finish, finish);
  }

  // Secret inputs select themselves on focus, for a quick manual copy.
  document.addEventListener("focusin", function (event) {
    if (event.target.matches("input[data-select-on-focus]")) event.target.select();
  });
})();
