"""Built-in English text for parity checks and calibration.

Varied on purpose: short and long sentences, numbers, punctuation, names, accents, quotes and a
hyphenated compound, so WordPiece and BPE tokenizers hit their less common paths.
"""

SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and most populous city of France.",
    "I absolutely loved this movie; the acting was superb and the soundtrack unforgettable!",
    "This was the worst purchase I have ever made, and customer service never replied.",
    "Marie Curie won Nobel Prizes in both physics (1903) and chemistry (1911).",
    "The meeting is scheduled for 3:30 p.m. on Tuesday, March 14th, in room 204-B.",
    "Transformers process every token of a sequence in parallel using self-attention.",
    "Can you recommend a good café near the Brandenburg Gate in Berlin?",
    "Water boils at 100 degrees Celsius at sea level.",
    'He said, "Don\'t forget the state-of-the-art benchmarks," and left.',
    "Apple reported quarterly revenue of $89.5 billion, up 8% year over year.",
    "The mitochondria is the powerhouse of the cell.",
    "Yes.",
    "Rain is expected tomorrow across the northern highlands, with strong winds near the coast "
    "and temperatures falling well below the seasonal average by the weekend.",
    "Naïve Bayes classifiers assume conditional independence between features.",
    "The committee, after hours of deliberation, finally approved the revised budget for the "
    "new library, which will open to the public in the spring of next year.",
)

# (question, context) pairs; every answer is a literal span of its context.
QA_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "What is the capital of France?",
        "Paris is the capital and most populous city of France, with an estimated population of two million residents.",
    ),
    (
        "When did Marie Curie win the Nobel Prize in chemistry?",
        "Marie Curie won the Nobel Prize in physics in 1903 and the Nobel Prize in chemistry in 1911.",
    ),
    (
        "Who wrote Pride and Prejudice?",
        "Pride and Prejudice is an 1813 novel of manners written by Jane Austen. It follows the "
        "character development of Elizabeth Bennet.",
    ),
    (
        "At what temperature does water boil at sea level?",
        "At sea level, water boils at 100 degrees Celsius, but at higher altitudes the boiling point "
        "is lower because the air pressure is lower.",
    ),
    (
        "What does self-attention let transformers do?",
        "Self-attention lets transformers process every token of a sequence in parallel, weighing "
        "how much each token should attend to every other token.",
    ),
    (
        "How much revenue did Apple report?",
        "Apple reported quarterly revenue of $89.5 billion, up 8% year over year, driven by strong "
        "iPhone and services sales.",
    ),
)


def long_text(min_words: int) -> str:
    """Real sentences joined until at least ``min_words`` words: text for max-length cases."""
    words: list[str] = []
    i = 0
    while len(words) < min_words:
        words.extend(SENTENCES[i % len(SENTENCES)].split())
        i += 1
    return " ".join(words)
