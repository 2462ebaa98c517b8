"""The chat UI in headless Chromium, as a new user would use it.

Usage: ui_test.py SERVER_URL PDF_PATH SCREENSHOT_PATH

Creates a knowledge base, uploads the PDF and waits for the progress bar to finish, asks a
question, waits for the streamed answer and its citation, clicks the citation and reads the
passage shown. Prints a JSON report on stdout; saves a screenshot.
"""

import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    url, pdf, shot = sys.argv[1:4]
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        wait = WebDriverWait(driver, 90)
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "agent-select").get_attribute("value"))
        title = driver.title

        driver.find_element(By.ID, "new-kb").send_keys("plant")
        driver.find_element(By.ID, "create-kb").click()
        wait.until(lambda d: d.find_element(By.ID, "kb-select").get_attribute("value") == "plant")

        driver.find_element(By.ID, "file-input").send_keys(pdf)
        driver.find_element(By.ID, "upload-btn").click()
        wait.until(lambda d: d.find_element(By.ID, "upload-status").text.startswith(("Ready", "Done")))
        upload_status = driver.find_element(By.ID, "upload-status").text
        progress = float(driver.find_element(By.ID, "upload-progress").get_attribute("value"))

        driver.find_element(By.ID, "chat-input").send_keys("How often is the reactor inspected?")
        driver.find_element(By.ID, "send-btn").click()
        links = wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant .cites .citation-link")
        )
        message = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
        answer = message.find_element(By.CSS_SELECTOR, ".answer-text").text
        deltas = int(message.get_attribute("data-deltas") or "0")
        citation = links[0].text
        links[0].click()
        wait.until(lambda d: "every 90 days" in d.find_element(By.ID, "passage").text)
        passage = driver.find_element(By.ID, "passage").text
        highlighted = driver.find_element(By.CSS_SELECTOR, "#passage mark").text
        driver.save_screenshot(shot)
        print(
            json.dumps(
                {
                    "title": title,
                    "upload_status": upload_status,
                    "progress": progress,
                    "answer": answer,
                    "deltas": deltas,
                    "citation": citation,
                    "passage": passage,
                    "highlighted": highlighted,
                }
            )
        )
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
