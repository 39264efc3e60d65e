"""GAN Art Studio in the browser: `python app.py` (or a Hugging Face Space with app_file: app.py).

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (gradio reads them itself; default
127.0.0.1:7860). The device comes from STUDIO_DEVICE, else CUDA when present.
"""

from studio.ui import build_demo, launch_options

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**launch_options())
