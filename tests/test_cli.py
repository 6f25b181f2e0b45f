"""The command line: parsing, actionable errors, the demo's configuration."""

from __future__ import annotations

from unreid.cli import build_parser, demo_config, main


def test_demo_config_is_camera_aware_unless_plain(tmp_path):
    cfg = demo_config(tmp_path, ())
    assert cfg.method.camera.proxies and cfg.method.camera.neighbourhood == "standardize"
    assert cfg.data.name == "synthetic" and cfg.model.backbone == "efficientnet_lite0"
    assert cfg.output_dir == str(tmp_path / "run") and cfg.data.root == str(tmp_path / "data")
    plain = demo_config(tmp_path, (), camera_aware=False)
    assert not plain.method.camera.proxies and plain.method.camera.neighbourhood == "none"
    # overrides win over the demo's own values
    assert demo_config(tmp_path, ["optim.epochs=2"]).optim.epochs == 2
    args = build_parser().parse_args(["demo", "--plain", "--output", str(tmp_path), "optim.iters=3"])
    assert args.plain and args.overrides == ["optim.iters=3"]


def test_datasets_lists_layouts(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("market1501", "dukemtmc", "msmt17", "cuhk03", "veri776", "regdb", "folder", "synthetic"):
        assert f"{name}:" in out or f"{name}_" in out, name
    assert "bounding_box_train" in out


def test_bad_config_value_is_one_line_error(tmp_path, capsys):
    rc = main(["train", "configs/cluster_contrast/market1501.yaml", "pseudo_labels.knn=brute",
               f"output_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "pseudo_labels.knn" in err and "Traceback" not in err


def test_overrides_may_follow_the_options(tmp_path, capsys, monkeypatch):
    import unreid.cli as cli

    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "eval", lambda a: seen.update(vars(a)) or 0)
    assert main(["eval", "c.yaml", "model.pretrained=false", "--checkpoint", "x.pth", "--json",
                 "model.camera_bn=true"]) == 0
    assert seen["overrides"] == ["model.pretrained=false", "model.camera_bn=true"] and seen["checkpoint"] == "x.pth"
    try:
        main(["eval", "c.yaml", "--checkpoint", "x.pth", "--bogus"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("an unknown option must be refused")
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
