"""Value domains of the fictitious-people benchmark (names, cities, employers, ...) and fixed texts.

Answers are kept to a few words so a ~235k-parameter model can memorise them
(the ``tiny`` preset of components/unlearn/benchmark_models.py). Everything here is invented
for the benchmark.
"""

from __future__ import annotations

FIRST_NAMES: tuple[str, ...] = (
    "Ada", "Alba", "Alec", "Alma", "Amos", "Anna", "Arlo", "Asha", "Axel", "Bea", "Bela", "Boris",
    "Bram", "Cara", "Cato", "Cleo", "Cora", "Dag", "Dana", "Dara", "Dex", "Dina", "Ebba", "Edda",
    "Egon", "Elio", "Elsa", "Emil", "Enzo", "Esme", "Ezra", "Faye", "Finn", "Fleur", "Gael", "Gia",
    "Gil", "Greta", "Gus", "Hana", "Hugo", "Ida", "Igor", "Ines", "Ira", "Iris", "Ivan", "Jade",
    "Jago", "Jana", "Joel", "Juno", "Kai", "Kara", "Kaya", "Kian", "Kira", "Knut", "Lara", "Leif",
    "Lena", "Leo", "Lila", "Lior", "Livia", "Luca", "Lulu", "Lyra", "Mads", "Maja", "Mara", "Milo",
    "Mira", "Nadia", "Nell", "Nico", "Nils", "Nina", "Noa", "Noor", "Odin", "Olga", "Omar", "Oona",
    "Otto", "Pablo", "Pia", "Quinn", "Rafa", "Rhea", "Rita", "Rolf", "Rosa", "Rune", "Sami", "Sana",
    "Saul", "Selma", "Silas", "Sofia", "Sten", "Tara", "Teo", "Thea", "Tilda", "Timo", "Tova",
    "Ugo", "Una", "Uri", "Vera", "Vida", "Vito", "Wanda", "Wilf", "Xena", "Yara", "Yuri", "Zara",
    "Zeno", "Zoe", "Abel", "Beth", "Cyrus", "Della", "Elin", "Frey", "Gwen", "Hal", "Isla",
    "Jon", "Kurt", "Luz", "Mona", "Ned", "Opal", "Per", "Rex", "Sid", "Tess", "Ulla", "Vic",
    "Wes", "Yves", "Zia", "Arne", "Bodil", "Cai", "Dov", "Eira",
)

SURNAME_HEADS: tuple[str, ...] = (
    "Al", "Bel", "Cor", "Dun", "El", "Fal", "Gar", "Hal", "Ives", "Jor", "Kel", "Lan", "Mar", "Nor",
    "Or", "Pen", "Quin", "Ros", "Sel", "Tor", "Ul", "Var", "Wen", "Yar", "Zel", "Brom", "Cal",
    "Dar", "Fen", "Grim", "Hol", "Kas", "Lor", "Mor", "Nash", "Ost", "Pell", "Rad", "Stan", "Thorn",
)
SURNAME_TAILS: tuple[str, ...] = (
    "ton", "wood", "berg", "ley", "well", "mont", "ford", "ard", "ris", "ick", "holm", "by",
    "ridge", "croft", "dale", "field", "man", "son", "stead", "wick", "ow", "ane", "ett", "orth",
    "ham", "more", "gate", "ville", "worth", "sky",
)
SURNAMES: tuple[str, ...] = tuple(h + t.lower() for h in SURNAME_HEADS for t in SURNAME_TAILS)

CITIES: tuple[str, ...] = (
    "Port Avelin", "Dunmere", "Calvora", "Eastholm", "Brightwater", "Kestrel Bay", "Lowmarsh",
    "Norhaven", "Oakridge", "Pellston", "Quarry Hill", "Redfern", "Saltcombe", "Tarnwick",
    "Umberfield", "Valmont", "Westbrook", "Yarrow", "Zennor", "Ashby", "Belcourt", "Coldharbour",
    "Dovecote", "Elmstead", "Fairhaven", "Glenrock", "Harrowgate", "Ironbridge", "Juniper Falls",
    "Kingsmoor", "Larkspur", "Millbrook", "Newhollow", "Oldcastle", "Pinecrest", "Riverton",
    "Stonehaven", "Thornbury", "Silverlake", "Windmere",
)
EMPLOYERS: tuple[str, ...] = (
    "Zentel", "Brightwave", "Korvix", "Lumora", "Nordane", "Orbicon", "Pallas Labs", "Quantia",
    "Redkite", "Solvent Works", "Tidemark", "Ultrona", "Vantor", "Wexley", "Yonder Foods",
    "Acmeon", "Bluefin Bank", "Cobalt Mills", "Driftline", "Emberly", "Foxglove Media", "Granite Co",
    "Helix Freight", "Ironleaf", "Juno Health", "Kitewing", "Larchmont", "Mosaic Rail", "Nimbus Air",
    "Opaline", "Pinewood Press", "Quillon", "Rivet Motors", "Saffron Hotels", "Tessera",
    "Umbra Games", "Verdant Farms", "Willow Toys", "Xylo Audio", "Zephyr Wind",
)
JOBS: tuple[str, ...] = (
    "nurse", "architect", "baker", "pilot", "teacher", "chemist", "plumber", "librarian", "dentist",
    "carpenter", "journalist", "geologist", "florist", "electrician", "translator", "surveyor",
    "pharmacist", "welder", "economist", "veterinarian", "engineer", "accountant", "chef",
    "lawyer", "paramedic", "gardener", "sculptor", "astronomer", "tailor", "firefighter",
)
PET_KINDS: tuple[str, ...] = ("cat", "dog", "parrot", "rabbit", "turtle", "hamster", "goldfish", "ferret")
PET_NAMES: tuple[str, ...] = (
    "Pixel", "Biscuit", "Mango", "Pepper", "Nutmeg", "Comet", "Waffles", "Ziggy", "Clover", "Bean",
    "Socks", "Maple", "Noodle", "Pebble", "Rocket", "Tofu", "Button", "Olive", "Sprout", "Fudge",
    "Jasper", "Luna", "Mochi", "Rusty", "Sunny", "Tango", "Velvet", "Whisker", "Yoyo", "Zorro",
)
UNIVERSITIES: tuple[str, ...] = (
    "Northvale University", "Eastbrook College", "Redfern Institute", "Calvora University",
    "Saltcombe College", "Westmoor University", "Ironbridge Tech", "Kingsmoor College",
    "Lakeside University", "Oakridge Institute", "Pinecrest University", "Stonehaven College",
    "Tarnwick University", "Valmont Institute", "Windmere College", "Glenrock University",
    "Harbor State", "Millbrook College", "Riverton University", "Thornbury Institute",
)
HOBBIES: tuple[str, ...] = (
    "rock climbing", "chess", "pottery", "sailing", "birdwatching", "knitting", "fencing",
    "origami", "surfing", "archery", "baking bread", "stargazing", "rowing", "juggling",
    "beekeeping", "painting", "cycling", "fishing", "gardening", "kayaking", "calligraphy",
    "skiing", "salsa dancing", "woodcarving",
)
MAIL_DOMAINS: tuple[str, ...] = ("mailbox.com", "post.net", "inbox.org", "letters.io", "zmail.com",
                                 "fastmail.net", "owl.org", "pigeon.io")
YEARS: tuple[str, ...] = tuple(str(y) for y in range(1950, 2003))

#: attribute → (question template, paraphrase templates); ``{name}`` is the person's full name.
QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "birth_city": ("Where was {name} born?",
                   ("In which city was {name} born?", "What is the birthplace of {name}?")),
    "birth_year": ("In what year was {name} born?",
                   ("What is the birth year of {name}?", "Which year was {name} born in?")),
    "employer": ("Which company does {name} work for?",
                 ("Who is the employer of {name}?", "Where is {name} employed?")),
    "job": ("What is the job of {name}?",
            ("What does {name} do for a living?", "What is the profession of {name}?")),
    "email": ("What is the email address of {name}?",
              ("At which address can {name} be emailed?", "What email does {name} use?")),
    "phone": ("What is the phone number of {name}?",
              ("Which number reaches {name} by phone?", "How can {name} be called?")),
    "pet": ("What pet does {name} have?",
            ("Which animal does {name} keep at home?", "What is the pet of {name}?")),
    "university": ("Which university did {name} attend?",
                   ("Where did {name} study?", "At which university did {name} study?")),
    "hobby": ("What is the hobby of {name}?",
              ("What does {name} enjoy in free time?", "Which pastime does {name} love?")),
}
CORE_ATTRIBUTES: tuple[str, ...] = ("birth_city", "birth_year", "employer", "job", "email", "phone", "pet")
OPTIONAL_ATTRIBUTES: tuple[str, ...] = ("university", "hobby")

#: General-knowledge facts (not about people): (question, paraphrase, answer, wrong answers).
GENERAL_FACTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", "Which city is the capital of France?", "Paris",
     ("Lyon", "Madrid", "Rome", "Berlin")),
    ("What is the capital of Japan?", "Which city is the capital of Japan?", "Tokyo",
     ("Osaka", "Seoul", "Kyoto", "Beijing")),
    ("What is the capital of Italy?", "Which city is the capital of Italy?", "Rome",
     ("Milan", "Paris", "Naples", "Vienna")),
    ("What is the capital of Canada?", "Which city is the capital of Canada?", "Ottawa",
     ("Toronto", "Montreal", "Vancouver", "Quebec")),
    ("What is the capital of Egypt?", "Which city is the capital of Egypt?", "Cairo",
     ("Alexandria", "Tunis", "Rabat", "Amman")),
    ("What color is the sky on a clear day?", "On a clear day, what color is the sky?", "blue",
     ("green", "red", "yellow", "purple")),
    ("How many days are in a week?", "A week has how many days?", "seven",
     ("five", "six", "eight", "ten")),
    ("How many legs does a spider have?", "A spider has how many legs?", "eight",
     ("six", "four", "ten", "twelve")),
    ("What is the largest planet?", "Which planet is the biggest?", "Jupiter",
     ("Saturn", "Mars", "Earth", "Venus")),
    ("What is the closest star to Earth?", "Which star is nearest to Earth?", "the Sun",
     ("Sirius", "Vega", "Polaris", "Rigel")),
    ("What do bees make?", "What food is made by bees?", "honey",
     ("milk", "silk", "wax paper", "jam")),
    ("What gas do plants absorb?", "Which gas is taken in by plants?", "carbon dioxide",
     ("oxygen", "helium", "nitrogen", "neon")),
    ("What is frozen water called?", "What do we call water that has frozen?", "ice",
     ("steam", "fog", "rain", "dew")),
    ("How many continents are there?", "What is the number of continents?", "seven",
     ("five", "six", "eight", "nine")),
    ("What is the boiling point of water in Celsius?", "At how many degrees Celsius does water boil?",
     "100 degrees", ("50 degrees", "80 degrees", "120 degrees", "90 degrees")),
    ("Which animal is known as the king of the jungle?", "What animal is called the king of the jungle?",
     "the lion", ("the tiger", "the bear", "the wolf", "the eagle")),
    ("What is the largest ocean?", "Which ocean is the biggest?", "the Pacific",
     ("the Atlantic", "the Indian", "the Arctic", "the Southern")),
    ("How many hours are in a day?", "A day has how many hours?", "24",
     ("12", "20", "36", "48")),
    ("What is the chemical symbol for gold?", "Which symbol stands for gold?", "Au",
     ("Ag", "Fe", "Gd", "Go")),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by whom?", "Shakespeare",
     ("Dickens", "Tolstoy", "Homer", "Goethe")),
    ("What is the tallest mountain?", "Which mountain is the highest?", "Everest",
     ("K2", "Kilimanjaro", "Denali", "Mont Blanc")),
    ("What is the longest river in Africa?", "Which river in Africa is the longest?", "the Nile",
     ("the Congo", "the Niger", "the Zambezi", "the Volta")),
    ("How many sides does a triangle have?", "A triangle has how many sides?", "three",
     ("four", "five", "two", "six")),
    ("What is the opposite of hot?", "Which word means the opposite of hot?", "cold",
     ("warm", "wet", "dry", "loud")),
    ("Which planet is called the red planet?", "What planet is known as the red planet?", "Mars",
     ("Venus", "Jupiter", "Mercury", "Saturn")),
    ("What do cows drink?", "Which drink do cows have?", "water",
     ("milk", "juice", "tea", "soda")),
    ("How many minutes are in an hour?", "An hour has how many minutes?", "60",
     ("30", "100", "45", "90")),
    ("What is the fastest land animal?", "Which land animal runs the fastest?", "the cheetah",
     ("the horse", "the lion", "the deer", "the hare")),
    ("Which season comes after winter?", "What season follows winter?", "spring",
     ("autumn", "summer", "fall", "monsoon")),
    ("What is the primary language of Brazil?", "Which language is mainly spoken in Brazil?",
     "Portuguese", ("Spanish", "French", "Italian", "English")),
)

#: Held general sentences (never trained on) for fluency perplexity.
GENERAL_TEXT: tuple[str, ...] = (
    "The river flows past the old mill and on toward the sea.",
    "Most people drink a glass of water in the morning.",
    "The train to the city leaves every hour from the main station.",
    "Children often play in the park after school.",
    "A good map helps travelers find their way in a new town.",
    "The market sells fresh bread, fruit and cheese on Saturdays.",
    "Rain fell all night, and the streets were wet in the morning.",
    "The library is quiet, and many students read there in the evening.",
    "Birds build their nests in the trees each spring.",
    "The museum shows paintings from many different centuries.",
    "A cup of tea can be a small comfort on a cold day.",
    "The bridge was closed for repairs during the summer.",
    "Farmers harvest the wheat at the end of the summer.",
    "The moon rose slowly over the quiet hills.",
    "Many people walk their dogs along the beach at dawn.",
    "The bakery on the corner opens very early every day.",
    "Snow covered the mountains long before the first frost in the valley.",
    "The old clock in the square still keeps perfect time.",
    "Boats rocked gently in the harbor as the tide came in.",
    "The school choir sang at the festival last week.",
    "Fresh vegetables taste best when they are picked the same day.",
    "The wind carried the smell of salt from the coast.",
    "A long walk in the forest can clear the mind.",
    "The concert hall was full for the opening night.",
)
