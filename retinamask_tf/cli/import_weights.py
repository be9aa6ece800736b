"""--mode=import_weights: a PyTorch checkpoint (the released RetinaMask code's, torchvision's
RetinaNet or ResNet) -> a run directory that eval, export, predict and train use."""

from retinamask_tf.weights import importer


def run(source, weights, model_dir, config_files=(), overrides=()):
    importer.import_weights(source, weights, model_dir, config_files, overrides)
    print(f"\nNext:\n  python main.py --mode=eval --model_dir={model_dir} "
          "--override data.val_json=... --override data.val_images=...\n"
          f"  python main.py --mode=export --model_dir={model_dir}\n"
          f"  python main.py --mode=train --model_dir={model_dir}   # fine-tune (its config.yaml)")
    return 0
