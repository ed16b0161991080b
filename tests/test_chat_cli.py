"""`python -m minivlm.chat`: a scripted conversation through standard input, and Ctrl-C during an answer."""

import io
import subprocess
import sys

from minivlm import chat
from minivlm.conversation import Conversation
from minivlm.tiny import DEMO_DIR

EXAMPLE = DEMO_DIR / "example.png"


def test_scripted_conversation_answers_the_demo_questions(tmp_path):
    script = (f"/image {EXAMPLE}\nWhat color is the circle?\nWhat shape is green?\n/nonsense\n/image /no/such.png\n"
              "/reset\n\n/exit\nnever asked\n")
    done = subprocess.run([sys.executable, "-m", "minivlm.chat"], input=script, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # another working directory: the demo model is found anyway
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["green", "circle"]
    assert "unknown command /nonsense" in done.stderr and "no such image file" in done.stderr
    assert "(new conversation)" in done.stderr


def test_ctrl_c_stops_the_answer_and_the_conversation_goes_on(monkeypatch, capsys):
    """Ctrl-C while the first answer streams: the answer stops, and the next question is answered from the same
    image, which the conversation kept ("What shape is red?" needs it: the red triangle)."""
    asked, images_kept, real_ask = [], [], Conversation.ask

    def ask(self, text, images=(), on_text=None, **settings):
        asked.append(text)
        if len(asked) == 1:  # the first question: Ctrl-C arrives with the first streamed piece (and the flush)
            def stop(piece):
                on_text(piece)
                raise KeyboardInterrupt
            return real_ask(self, text, images, stop, **settings)
        images_kept.append(len(self.images) + len(images))  # what the second question is answered from
        return real_ask(self, text, images, on_text, **settings)

    monkeypatch.setattr(Conversation, "ask", ask)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"/image {EXAMPLE}\nWhat color is the circle?\n"
                                                  "What shape is red?\n"))  # end of input quits
    assert chat.main(["--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.splitlines() == ["green [stopped]", "triangle"]
    assert asked == ["What color is the circle?", "What shape is red?"]
    assert images_kept == [1]  # the interrupted turn's image, not a lucky guess from the question alone
