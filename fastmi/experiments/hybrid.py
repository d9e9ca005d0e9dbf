"""Sinha, Song & Ermon, "Hybrid mutual information lower-bound estimators": Table 1 and Figures 2-5.

An NVAE-style autoencoder (``fastmi.models.hybrid_autoencoder``) maps an image to z = [y, y_hat]
(C_z x 16 x 16); MoCo-v2 (``fastmi.models.moco``) trains on y alone. One model is trained per alpha of

    alpha * squared reconstruction error + (1 - alpha) * MoCo-v2 InfoNCE(y)      (``_hybrid_train``)

alpha = 0 is MoCo-v2 alone (Table 1's MoCo-v2 row), alpha = 1 the autoencoder alone (standing in for
NVAE); the paper's single unnamed alpha becomes a curve. Each model is scored (``_hybrid_eval``) by the
test reconstruction MSE and linear probes on frozen z, y and y_hat, against raw pixels and an
untrained encoder. For the models of ``ddim_alphas``, a latent diffusion model
(``fastmi.models.latent_ddim``) is trained on the standardised z of the frozen encoder, sampled with
DDIM (eta = 0) and decoded; the samples are scored by the FID when ``inception_weights`` names the
Inception file, else by the Frechet distance in a classifier's feature space (labelled so, with
calibration rows). Interpolations of z, y only and y_hat only between test pairs (Figures 2-5) are
drawn with how far each moves the decoded image.

The paper names no hyperparameter beyond the latent size: every setting marked INFERRED below follows
the cited methods (NVAE cells, MoCo-v2's head, queue, momentum, temperature and augmentations, DDIM's
schedule) and is a --set option. CIFAR-10/100 are read from --data-dir (a GPU run:
``fastmi run hybrid --data-dir DIR --device cuda``); Fashion-MNIST is padded from 28 to 32 pixels.
"""
from __future__ import annotations

import dataclasses
import math
import sys

import torch

from ..data import NUM_CLASSES, load_images
from ..models.latent_ddim import LatentDiffusion
from . import _hybrid_eval as ev
from . import _hybrid_train as tr
from . import claims, plotting, runner
from . import settings as checks

NAME = "hybrid"
SUMMARY = ("Sinha, Song & Ermon Table 1 / Figs 2-5: autoencoder + MoCo-v2 on half the latent, an alpha sweep, "
           "latent DDIM, interpolations")
REQUIRES = {"matplotlib": "its figures", "kornia": "MoCo-v2's augmentations", "torchmetrics": "the Frechet distance"}
DATASETS = ("cifar10", "cifar100", "fashion-mnist")
PAPER = {  # Table 1 (column alignment inferred from the extracted text): MSE / FID / probe accuracy %
    "cifar10": {"Hybrid": (2.6, 34.6, 77.6), "MoCo-v2": (None, None, 78.3), "NVAE": (0.25, 36.4, 18.8),
                "DDIM": (2.5, 3.2, 22.5), "BigGAN": (None, 18.6, 70.8)},
    "cifar100": {"Hybrid": (3.3, 41.2, 46.7), "MoCo-v2": (None, None, 49.04), "NVAE": (0.53, 42.5, 4.1),
                 "DDIM": (3.2, 13.3, 2.2), "BigGAN": (None, 22.2, 43.3)}}


def requires(cfg) -> dict:
    return {"torch_fidelity": "the Inception network of the FID (inception_weights)"} if cfg.inception_weights else {}


def dataset_names(cfg) -> list:
    return [cfg.dataset]


@dataclasses.dataclass
class Config:
    """The paper's setting on CIFAR (GPU scale); INFERRED = the paper does not say (SPEC section 3)."""
    dataset: str = "cifar10"
    n_train: int = 0                     # 0: the whole split
    n_test: int = 0
    latent_channels: int = 6             # the paper: 16 x 16 x 6
    widths: tuple = (64, 128)            # INFERRED: NVAE-style cells at 32 x 32 and 16 x 16, "fewer layers"
    cells: int = 2                       # INFERRED: residual cells per resolution
    split: str = "channels"              # INFERRED: y = first C_z / 2 channels; "rows": the top 8 rows
    alphas: tuple = runner.subset_field((0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 1.0))  # the paper: one unnamed alpha
    hybrid_alpha: float = 0.01           # INFERRED: the alpha reported as the Hybrid row
    recon_target: str = "clean"          # INFERRED: reconstruct the unaugmented image (keeps colour)
    recon_scale: str = "sum"             # INFERRED: sum over the image's values = Gaussian -log q(x|z)
    epochs: int = 200                    # INFERRED: MoCo-v2's 200-epoch schedule
    batch_size: int = 256                # MoCo-v2
    lr: float = 1e-3                     # INFERRED: Adam (NVAE trains with Adamax)
    head_hidden: int = 2048              # MoCo-v2's MLP head
    moco_dim: int = 128
    queue_size: int = 65536
    moco_momentum: float = 0.999
    temperature: float = 0.2             # MoCo-v2
    key_bn_groups: int = 8               # shuffle BN over 8 groups (MoCo's 8 GPUs)
    moco_loss: str = "fused"             # fastmi's fused InfoNCE; "reference": torch cross_entropy
    probe_epochs: int = 100
    ddim_alphas: tuple = runner.subset_field((0.01, 1.0))  # latent DDIM for the Hybrid and the autoencoder
    ddim_width: int = 64                 # INFERRED: U-Net base width
    ddim_epochs: int = 200
    ddim_lr: float = 2e-4                # DDPM's
    diffusion_steps: int = 1000          # DDPM/DDIM: T = 1000, linear betas 1e-4 .. 0.02
    sampling_steps: int = 50             # DDIM, eta = 0
    n_samples: int = 10000               # generated images scored against n_fid test images
    n_fid: int = 10000
    classifier_epochs: int = 30          # the feature classifier of the classifier Frechet distance
    inception_weights: str = ""          # Inception-v3 weights file: the real FID; empty: classifier distance
    interp_pairs: int = 4
    interp_frames: int = 8
    log_every: int = runner.runner_field(20)
    ckpt_every: int = runner.runner_field(200)

    def paper_value(self, name: str, value) -> str:
        return "the whole split" if name in ("n_train", "n_test") else repr(value)

    def validate(self):
        checks.one_of(self, "dataset", DATASETS)
        checks.int_at_least(self, 0, "n_train", "n_test")
        checks.int_at_least(self, 1, "cells", "epochs", "batch_size", "head_hidden", "moco_dim", "queue_size",
                            "key_bn_groups", "probe_epochs", "ddim_width", "ddim_epochs", "diffusion_steps",
                            "sampling_steps", "n_samples", "n_fid", "classifier_epochs", "interp_pairs",
                            "log_every", "ckpt_every")
        checks.int_at_least(self, 2, "latent_channels", "interp_frames", "batch_size")
        checks.one_of(self, "split", ("channels", "rows"))
        checks.need(self.split != "channels" or self.latent_channels % 2 == 0, "latent_channels",
                    "even with split=channels", self.latent_channels)
        checks.need(len(self.widths) == 2 and all(checks.positive_ints(w) for w in self.widths), "widths",
                    "two positive channel counts", self.widths)
        checks.items(self, "alphas", lambda a: checks.is_number(a) and 0 <= a <= 1, "numbers in [0, 1]")
        checks.need(self.hybrid_alpha in self.alphas, "hybrid_alpha", f"one of alphas {list(self.alphas)}",
                    self.hybrid_alpha)
        checks.items(self, "ddim_alphas", lambda a: a in self.alphas, f"values of alphas {list(self.alphas)}",
                     nonempty=False)
        checks.one_of(self, "recon_target", ("clean", "augmented"))
        checks.one_of(self, "recon_scale", ("sum", "mean"))
        checks.one_of(self, "moco_loss", ("fused", "reference"))
        checks.positive(self, "lr", "temperature", "ddim_lr")
        checks.in_interval(self, "moco_momentum", 0, 1)
        checks.need(self.queue_size >= self.batch_size, "queue_size", f"at least batch_size ({self.batch_size})",
                    self.queue_size)
        checks.need(self.sampling_steps <= self.diffusion_steps, "sampling_steps",
                    f"at most diffusion_steps ({self.diffusion_steps})", self.sampling_steps)
        if self.inception_weights:
            import os
            checks.need(os.path.isfile(self.inception_weights), "inception_weights", "an existing file",
                        self.inception_weights)


QUICK = {"dataset": "fashion-mnist", "n_train": 2000, "n_test": 1000, "widths": (16, 32), "cells": 1,
         "alphas": (0.0, 0.01, 1.0), "epochs": 3, "batch_size": 128, "head_hidden": 256, "queue_size": 1024,
         "moco_momentum": 0.99, "key_bn_groups": 4, "probe_epochs": 30, "ddim_alphas": (0.01,), "ddim_width": 16,
         "ddim_epochs": 12, "sampling_steps": 20, "n_samples": 500, "n_fid": 1000, "classifier_epochs": 3,
         "interp_pairs": 3, "ckpt_every": 50}


def load(cfg, ctx) -> tuple:
    """(train images, train labels, test images, test labels): float images in [0, 1] at 32 x 32."""
    out = []
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        d = load_images(cfg.dataset, split, ctx.data_dir, ctx.download)
        images, labels = (d.images[:n], d.labels[:n]) if n else (d.images, d.labels)
        x = images.float().div_(255.0)
        if x.shape[-1] == 28:  # Fashion-MNIST: pad 28 -> 32 with the background value 0
            x = torch.nn.functional.pad(x, (2, 2, 2, 2))
        out += [x, labels]
    return tuple(out)


def artifact(ctx, name: str):
    """A file of the run's jobs/ folder (models and samples the later stages read)."""
    folder = ctx.run_dir / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _batches(n: int, batch: int, epoch: int, seed: int) -> list:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1009 + epoch))
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)]  # full batches only (the queue)


def train_alpha(ctx, cfg, alpha: float, data: tuple, n_classes: int, jobs: dict) -> dict:
    """Train the model of one alpha; its finish() scores it and saves its weights for the later stages."""
    train_x, train_y, test_x, test_y = data
    job = f"alpha={alpha:g}"
    seed = ctx.job_seed(job)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = tr.HybridModel(cfg, train_x.shape[1], train_x.shape[-1], gen).to(ctx.device)
    opt = torch.optim.Adam(model.trained_parameters(), lr=cfg.lr)
    aug = tr.augmentations(train_x.shape[1], train_x.shape[-1])
    per_epoch = len(_batches(len(train_x), cfg.batch_size, 0, seed))
    if per_epoch == 0:
        raise ValueError(f"n_train ({len(train_x)}) is smaller than batch_size ({cfg.batch_size})")

    def step(i: int):
        idx = _batches(len(train_x), cfg.batch_size, i // per_epoch, seed)[i % per_epoch]
        row = tr.train_step(model, aug, opt, train_x[idx].to(ctx.device), alpha, cfg, gen, ctx.backend)
        return row if i % cfg.log_every == 0 or i == cfg.epochs * per_epoch - 1 else None

    def finish() -> dict:
        torch.save(model.state_dict(), artifact(ctx, f"{job}.model.pt"))
        return score(model, cfg, data, n_classes, ctx)

    jobs[job] = ctx.loop(job, {"model": model, "opt": opt, "gen": gen}, step, cfg.epochs * per_epoch,
                         ckpt_every=cfg.ckpt_every, finish=finish)
    return jobs[job].final


def score(model, cfg, data: tuple, n_classes: int, ctx) -> dict:
    """Test reconstruction MSE and linear probes on z, y and y_hat (probe accuracy in %)."""
    train_x, train_y, test_x, test_y = data
    z_train, z_test = ev.encode(model, train_x.to(ctx.device)).cpu(), ev.encode(model, test_x.to(ctx.device)).cpu()
    out = ev.reconstruction_mse(test_x, ev.decode(model, z_test.to(ctx.device)).cpu())
    parts_train, parts_test = model.ae.split(z_train), model.ae.split(z_test)
    for name, a, b in (("z", z_train, z_test), ("y", parts_train[0], parts_test[0]),
                       ("y_hat", parts_train[1], parts_test[1])):
        out[f"probe_{name}"] = 100 * ev.linear_probe(a, train_y, b, test_y, epochs=cfg.probe_epochs,
                                                     seed=ctx.seed, num_classes=n_classes, device=ctx.device)
    return out


def load_model(ctx, cfg, alpha: float, image_shape: tuple) -> tr.HybridModel:
    model = tr.HybridModel(cfg, image_shape[0], image_shape[-1]).to(ctx.device)
    state = torch.load(artifact(ctx, f"alpha={alpha:g}.model.pt"), weights_only=True, map_location=ctx.device)
    model.load_state_dict(state)
    return model.eval()


def baselines(ctx, cfg, data: tuple, n_classes: int) -> dict:
    """Probe accuracy (%) on raw pixels, and the scores of an untrained encoder."""
    train_x, train_y, test_x, test_y = data

    def finish() -> dict:
        torch.manual_seed(ctx.job_seed("random-encoder"))
        model = tr.HybridModel(cfg, train_x.shape[1], train_x.shape[-1]).to(ctx.device)
        random = score(model, cfg, data, n_classes, ctx)
        pixels = 100 * ev.linear_probe(train_x, train_y, test_x, test_y, epochs=cfg.probe_epochs, seed=ctx.seed,
                                       num_classes=n_classes, device=ctx.device)
        return {"pixels_probe": pixels, **{f"random_{k}": v for k, v in random.items()}}

    return ctx.loop("baselines", {}, lambda i: None, 0, finish=finish).final


def train_classifier(ctx, cfg, data: tuple, n_classes: int, jobs: dict) -> tuple:
    """The feature network of the classifier Frechet distance, trained with Adam on the training images."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(ctx.job_seed("feature-classifier"))
    net = ev.FeatureClassifier(train_x.shape[1], n_classes).to(ctx.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    per_epoch = max(1, len(train_x) // 128)
    seed = ctx.job_seed("feature-classifier")

    def step(i: int):
        net.train()
        idx = _batches(len(train_x), min(128, len(train_x)), i // per_epoch, seed)[i % per_epoch]
        loss = torch.nn.functional.cross_entropy(net.logits(train_x[idx].to(ctx.device)), train_y[idx].to(ctx.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())} if i % cfg.log_every == 0 else None

    def finish() -> dict:
        torch.save(net.state_dict(), artifact(ctx, "feature-classifier.model.pt"))
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net.logits(test_x[i:i + 500].to(ctx.device)).argmax(1).cpu()
                              for i in range(0, len(test_x), 500)])
        return {"test_accuracy": 100 * float((pred == test_y).double().mean())}

    result = jobs["feature-classifier"] = ctx.loop("feature-classifier", {"net": net, "opt": opt}, step,
                                                   cfg.classifier_epochs * per_epoch, ckpt_every=cfg.ckpt_every,
                                                   finish=finish)
    net.load_state_dict(torch.load(artifact(ctx, "feature-classifier.model.pt"), weights_only=True,
                                   map_location=ctx.device))
    return net.eval(), result.final


def train_ddim(ctx, cfg, alpha: float, data: tuple, jobs: dict) -> torch.Tensor:
    """Latent DDIM on the frozen encoder's standardised z (per channel); returns decoded samples."""
    train_x = data[0]
    model = load_model(ctx, cfg, alpha, tuple(train_x.shape[1:]))
    z = ev.encode(model, train_x.to(ctx.device))
    mean, std = z.mean((0, 2, 3), keepdim=True), z.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    zs = (z - mean) / std
    job = f"ddim-alpha={alpha:g}"
    seed = ctx.job_seed(job)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    diffusion = LatentDiffusion(z.shape[1], cfg.ddim_width, cfg.diffusion_steps).to(ctx.device)
    opt = torch.optim.Adam(diffusion.parameters(), lr=cfg.ddim_lr)
    batch = min(cfg.batch_size, len(zs))
    per_epoch = len(_batches(len(zs), batch, 0, seed))
    samples_path = artifact(ctx, f"{job}.samples.pt")

    def step(i: int):
        idx = _batches(len(zs), batch, i // per_epoch, seed)[i % per_epoch]
        loss = diffusion.loss(zs[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())} if i % cfg.log_every == 0 else None

    def finish() -> dict:
        torch.save(diffusion.state_dict(), artifact(ctx, f"{job}.model.pt"))
        diffusion.eval()
        sample_gen = torch.Generator().manual_seed(seed + 1)
        chunks = []
        for start in range(0, cfg.n_samples, 500):
            n = min(500, cfg.n_samples - start)
            zs_new = diffusion.sample(n, tuple(z.shape[1:]), cfg.sampling_steps, sample_gen, ctx.device,
                                      clip=float(zs.abs().max()))  # the training latents' range
            chunks.append(ev.decode(model, zs_new * std + mean).cpu())
        torch.save(torch.cat(chunks), samples_path)
        return {"samples": cfg.n_samples}

    jobs[job] = ctx.loop(job, {"diffusion": diffusion, "opt": opt, "gen": gen}, step, cfg.ddim_epochs * per_epoch,
                         ckpt_every=cfg.ckpt_every, finish=finish)
    return torch.load(samples_path, weights_only=True)


def generation_scores(ctx, cfg, data: tuple, samples: dict, classifier) -> dict:
    """Frechet distances to n_fid test images: calibration rows, then the samples of each alpha."""
    train_x, _, test_x, _ = data
    n = cfg.n_fid
    ref = test_x[:n]
    weights = cfg.inception_weights or None
    dist = lambda imgs: ev.frechet_distance(ref, imgs, classifier, weights)  # noqa: E731
    hybrid = load_model(ctx, cfg, cfg.hybrid_alpha, tuple(train_x.shape[1:]))
    recon = ev.decode(hybrid, ev.encode(hybrid, train_x[:n].to(ctx.device))).cpu()
    import kornia

    blurred = kornia.filters.gaussian_blur2d(train_x[:n], (5, 5), (1.0, 1.0))
    rows = {"calibration: training images": dist(train_x[:n]),
            f"calibration: reconstructions (alpha={cfg.hybrid_alpha:g}) of training images": dist(recon),
            "calibration: training images blurred (Gaussian, sigma 1 px)": dist(blurred)}
    for alpha, imgs in samples.items():
        rows[f"latent DDIM samples, alpha={alpha:g}"] = dist(imgs[:n])
    return {"metric": "FID (Inception-v3 pool3)" if weights else "classifier Frechet distance (not FID)",
            "reference": f"{len(ref)} test images", "rows": rows}


def interpolations(ctx, cfg, data: tuple) -> dict:
    """Figures 2-5 for the Hybrid model: frames of test pairs (2i, 2i+1) and how far each mode moves."""
    test_x = data[2]
    model = load_model(ctx, cfg, cfg.hybrid_alpha, tuple(test_x.shape[1:]))
    pairs = min(cfg.interp_pairs, len(test_x) // 2)
    x0, x1 = test_x[0:2 * pairs:2].to(ctx.device), test_x[1:2 * pairs:2].to(ctx.device)
    frames = ev.interpolate(model, ev.encode(model, x0), ev.encode(model, x1), torch.linspace(0, 1, cfg.interp_frames))
    return {"frames": {k: v.cpu() for k, v in frames.items()}, "movement": ev.interpolation_movement(frames)}


def table1_rows(cfg, models: dict, gen: dict) -> dict:
    """Table 1's rows with ours (MSE per image, generation distance, probe on z %); None = not measured.
    MoCo-v2 (alpha = 0) has no trained decoder: its MSE is left out, as in the paper."""
    def sample_distance(alpha):
        return gen["rows"].get(f"latent DDIM samples, alpha={alpha:g}")

    rows = {}
    if cfg.hybrid_alpha in models:
        r = models[cfg.hybrid_alpha]
        rows[f"Hybrid (alpha={cfg.hybrid_alpha:g})"] = (r["mse_per_image"], sample_distance(cfg.hybrid_alpha), r["probe_z"])
    if 0.0 in models:
        rows["MoCo-v2 (alpha=0)"] = (None, None, models[0.0]["probe_z"])
    if 1.0 in models:
        r = models[1.0]
        rows["NVAE (ours: autoencoder, alpha=1)"] = (r["mse_per_image"], sample_distance(1.0), r["probe_z"])
    rows["DDIM (pixel space: not run)"] = (None, None, None)
    rows["BigGAN (not run)"] = (None, None, None)
    return rows


def role(alpha: float) -> str:
    return {0.0: "MoCo-v2 alone", 1.0: "autoencoder alone (NVAE stand-in)"}.get(alpha, "hybrid")


def decide_claims(cfg, models: dict, base: dict, movement: dict) -> list:
    out = []
    margin = models[0.0]["probe_z"] - base["random_probe_z"] if 0.0 in models else math.nan
    if 0.0 in models and 1.0 in models and len(models) > 2 and not margin >= 2.0:
        out.append(claims.claim("(a) a hybrid alpha keeps most of MoCo-v2's probe accuracy while reconstructing "
                                "nearly as well as the autoencoder",
                                f"MoCo-v2 alone (alpha=0) is {margin:+.1f} points from an untrained encoder's probe "
                                "accuracy (z): at this scale there is no contrastive gain to keep", None,
                                "fastmi run hybrid --data-dir DIR --device cuda (CIFAR-10 at the paper's scale; not measured)"))
    elif 0.0 in models and 1.0 in models and len(models) > 2:
        moco, ae = models[0.0], models[1.0]
        good = [a for a, r in models.items() if 0 < a < 1 and r["probe_z"] >= 0.9 * moco["probe_z"]
                and r["mse_per_value"] <= 2 * ae["mse_per_value"]]
        measured = "; ".join(f"alpha={a:g}: probe(z) {r['probe_z']:.1f}%, MSE/value {r['mse_per_value']:.2e}"
                             for a, r in sorted(models.items()))
        out.append(claims.claim("(a) a hybrid alpha keeps most of MoCo-v2's probe accuracy (here: >= 90% of "
                                "alpha=0's) while reconstructing nearly as well as the autoencoder (here: MSE <= 2x "
                                "alpha=1's)", measured + f"; qualifying alphas: {good or 'none'}", bool(good)))
    else:
        out.append(claims.claim("(a) a hybrid alpha keeps MoCo-v2's accuracy and the autoencoder's reconstruction",
                                "needs alphas with 0, 1 and one in between", None,
                                "fastmi run hybrid --set alphas=0,0.01,1"))
    ratio = movement["y"] / movement["z"] if movement["z"] > 0 else math.nan
    out.append(claims.claim("(b) interpolating y alone barely changes the decoded image (here: it moves it less "
                            "than 1/4 as far as interpolating all of z)",
                            f"MSE/value from the start image at t=1: all of z {movement['z']:.2e}, y only "
                            f"{movement['y']:.2e}, y_hat only {movement['y_hat']:.2e} (y/z = {ratio:.2f})",
                            bool(ratio < 0.25) if math.isfinite(ratio) else None))
    return out


def table(cfg, models: dict, base: dict, classifier: dict, gen: dict, movement: dict, timing: dict) -> str:
    f = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"hybrid (Sinha, Song & Ermon, Table 1) on {cfg.dataset}; z = {cfg.latent_channels} x 16 x 16, "
             f"y = {cfg.split} half; reconstruction target {cfg.recon_target}, loss scale {cfg.recon_scale}",
             "MSE of test images in [0, 1]: per value, and per image (sum over its values; the unit Table 1's "
             "numbers fit, INFERRED)",
             f"{'alpha':<8}{'role':<36}{'MSE/value':>11}{'MSE/image':>11}{'probe z %':>11}{'probe y %':>11}"
             f"{'probe y^ %':>11}"]
    for alpha, r in sorted(models.items()):
        lines.append(f"{alpha:<8g}{role(alpha):<36}{r['mse_per_value']:>11.2e}{r['mse_per_image']:>11.3g}"
                     f"{r['probe_z']:>11.1f}{r['probe_y']:>11.1f}{r['probe_y_hat']:>11.1f}")
    lines.append(f"{'-':<8}{'untrained encoder':<36}{base['random_mse_per_value']:>11.2e}"
                 f"{base['random_mse_per_image']:>11.3g}{base['random_probe_z']:>11.1f}{base['random_probe_y']:>11.1f}"
                 f"{base['random_probe_y_hat']:>11.1f}")
    lines.append(f"{'-':<8}{'raw pixels':<36}{'':>11}{'':>11}{base['pixels_probe']:>11.1f}")
    lines.append(f"generation: {gen['metric']} to {gen['reference']} (feature classifier test accuracy "
                 f"{classifier['test_accuracy']:.1f}%)" if "not FID" in gen["metric"] else
                 f"generation: {gen['metric']} to {gen['reference']}")
    for name, v in gen["rows"].items():
        lines.append(f"  {name:<70}{v:>10.2f}")
    lines.append(f"interpolation (Figs 2-5), MSE/value of the t=1 frame from the t=0 frame: z {movement['z']:.2e}, "
                 f"y only {movement['y']:.2e}, y_hat only {movement['y_hat']:.2e}")
    lines.append(f"MoCo loss at n={timing['n']}, 1+K={timing['queue'] + 1}: fused {timing['fused_ms']:.2f} ms, "
                 f"reference {timing['reference_ms']:.2f} ms ({timing['speedup']:.2f}x; forward + backward)")
    lines.append(f"Table 1 beside this run ({cfg.dataset}; ours: MSE per image, {gen['metric']}, probe on z %; "
                 "paper: MSE / FID / Acc %):")
    lines.append(f"  {'row':<34}{'ours':>26}   {'paper CIFAR-10':>18}   {'paper CIFAR-100':>18}")
    for name, ours in table1_rows(cfg, models, gen).items():
        cells = "".join(f"{f(v, spec):>9}" for v, spec in zip(ours, (".3g", ".2f", ".1f")))
        paper = [" ".join(f(v, "g") for v in PAPER[d].get(name.split(" ")[0], (None,) * 3)) for d in PAPER]
        lines.append(f"  {name:<34}{cells}   {paper[0]:>18}   {paper[1]:>18}")
    lines.append(runner.differences_text(cfg))
    return "\n".join(lines)


def figures(run_dir, cfg, models: dict, base: dict, samples: dict, test_x, interp: dict) -> None:
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    alphas = sorted(models)
    for key, marker, label in (("probe_z", "o", "probe on z"), ("probe_y", "s", "probe on y")):
        ax.plot([models[a]["mse_per_value"] for a in alphas], [models[a][key] for a in alphas], marker=marker,
                linestyle="none", label=label)
    for a in alphas:
        ax.annotate(f"alpha={a:g}", (models[a]["mse_per_value"], models[a]["probe_z"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.axhline(base["pixels_probe"], ls="--", c="k", lw=0.8, label="raw pixels")
    ax.axhline(base["random_probe_z"], ls=":", c="gray", lw=0.8, label="untrained encoder (z)")
    ax.set_xscale("log")
    plotting.labels(ax, "test reconstruction MSE per value (images in [0, 1]; alpha=0: untrained decoder)",
                    "linear-probe test accuracy (%)", f"hybrid on {cfg.dataset}: one point per alpha")
    ax.legend(fontsize=7)
    plotting.save(fig, run_dir / "tradeoff.png")

    def show(ax, img, title=None):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray" if img.shape[0] == 1 else None,
                  vmin=0, vmax=1)
        ax.set_axis_off()  # a picture, not a plot: no axes to label
        if title:
            ax.set_title(title, fontsize=7, loc="left")  # runs on over the row's other pictures

    cols = 8
    panels = [("test images", test_x[:cols * 2])] + [(f"DDIM samples, alpha={a:g}", s[:cols * 2])
                                                      for a, s in samples.items()]
    fig, axes = plt.subplots(2 * len(panels), cols, figsize=(cols * 0.9, 2 * len(panels) * 1.0), squeeze=False)
    for p, (title, imgs) in enumerate(panels):
        for i in range(2 * cols):
            show(axes[2 * p + i // cols][i % cols], imgs[i] if i < len(imgs) else torch.zeros_like(imgs[0]),
                 title if i == 0 else None)
    plotting.save(fig, run_dir / "samples.png")

    frames, move = interp["frames"], interp["movement"]
    pairs, t = frames["z"].shape[:2]
    fig, axes = plt.subplots(3 * pairs, t, figsize=(t * 0.9, 3 * pairs * 0.95), squeeze=False)
    names = {"z": "all of z", "y": "y only", "y_hat": "y_hat only"}
    for p in range(pairs):
        for m, mode in enumerate(("z", "y", "y_hat")):
            for j in range(t):
                show(axes[3 * p + m][j], frames[mode][p, j])
            axes[3 * p + m][0].text(-0.08, 0.5, f"{names[mode]}\n{move[mode]:.1e}", transform=axes[3 * p + m][0].transAxes,
                                    ha="right", va="center", fontsize=6)
    fig.suptitle("interpolations t = 0 .. 1 (left to right); number: mean MSE/value of t=1 vs t=0 over pairs",
                 fontsize=7)
    plotting.save(fig, run_dir / "interpolations.png")


def run(cfg: Config, ctx: runner.RunContext) -> dict:
    data = load(cfg, ctx)
    n_classes = NUM_CLASSES[cfg.dataset]
    timing = tr.time_moco_losses(cfg.batch_size, cfg.queue_size, cfg.moco_dim, cfg.temperature, device=ctx.device,
                                 backend=ctx.backend)
    jobs = {}
    models = {float(a): train_alpha(ctx, cfg, float(a), data, n_classes, jobs) for a in cfg.alphas}
    base = baselines(ctx, cfg, data, n_classes)
    classifier, classifier_result = (None, {"test_accuracy": math.nan}) if cfg.inception_weights else \
        train_classifier(ctx, cfg, data, n_classes, jobs)
    samples = {float(a): train_ddim(ctx, cfg, float(a), data, jobs) for a in cfg.ddim_alphas}
    gen = generation_scores(ctx, cfg, data, samples, classifier)
    interp = interpolations(ctx, cfg, data)
    runner.write_metrics(ctx.run_dir / "metrics.csv", jobs)
    figures(ctx.run_dir, cfg, models, base, samples, data[2], interp)
    found = decide_claims(cfg, models, base, interp["movement"])
    return {"dataset": cfg.dataset, "models": {f"{a:g}": r for a, r in models.items()}, "baselines": base,
            "feature_classifier": classifier_result, "generation": gen, "interpolation": interp["movement"],
            "moco_loss_timing": timing, "paper": PAPER,
            "table1": {k: list(v) for k, v in table1_rows(cfg, models, gen).items()},
            "claims": [c.as_dict() for c in found],
            "table": table(cfg, models, base, classifier_result, gen, interp["movement"], timing)}


if __name__ == "__main__":
    raise SystemExit(runner.main(sys.argv[1:], module=sys.modules[__name__]))
