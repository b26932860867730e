// Copy buttons for the install lines. Progressive enhancement: the buttons are `hidden` in the
// HTML and shown only here, so without scripts the page has no dead buttons and the commands stay
// plain, selectable text.
"use strict";

(function () {
  var status = document.getElementById("copy-status");

  function say(button, label, message) {
    button.textContent = label;
    if (status) {
      status.textContent = message;
    }
    window.setTimeout(function () {
      button.textContent = "Copy";
    }, 2000);
  }

  // Without the async clipboard (a page served over plain http from another host than
  // localhost), select the command's text and use the older copy command.
  function copyBySelection(button) {
    var code = button.parentNode.querySelector("code");
    if (!code || !document.execCommand) {
      return false;
    }
    var range = document.createRange();
    range.selectNodeContents(code);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (e) {
      copied = false;
    }
    return copied;
  }

  var buttons = document.querySelectorAll("button[data-copy]");
  Array.prototype.forEach.call(buttons, function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = button.getAttribute("data-copy");
      var done = function () {
        say(button, "Copied", "Copied: " + text);
      };
      var failed = function () {
        if (copyBySelection(button)) {
          done();
        } else {
          say(button, "Copy", "Could not copy; select the command instead.");
        }
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, failed);
      } else {
        failed();
      }
    });
  });
})();
