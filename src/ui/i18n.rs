//! The words on pagegate's pages and in its mail, per language.
//!
//! Templates get the table of the page's language as `t`, so `{{ t.send_code }}` prints the button
//! label. A few entries hold `{name}` placeholders, filled in by the `fill` filter
//! (`{{ t.sign_in_to | fill(page=page_title) }}`), and the plural entries hold one form per plural
//! category separated by `|`, chosen by the `plural` filter (`{{ t.minutes | plural(5) }}`).
//! The unit tests check that both languages have the same keys and the same placeholders, so a
//! missing word fails `cargo test`, never a visitor's request.

use crate::config::Language;

/// The keys the login flow may pass as a page's `error`, or as a `Message` page's title and
/// message. Each one is in every language's table.
pub const MESSAGE_KEYS: &[&str] = &[
    "invalid_email",
    "wrong_code",
    "code_expired",
    "too_many_attempts",
    "send_failed",
    "csrf",
    "link_used",
    "link_invalid_title",
    "link_invalid",
    "link_confirm_account",
    "error_title",
    "error",
];

/// Every entry of one language, in a fixed order.
pub(crate) fn table(lang: Language) -> &'static [(&'static str, &'static str)] {
    match lang {
        Language::En => EN,
        Language::Ru => RU,
    }
}

/// One entry, if the language has it.
pub(crate) fn lookup(lang: Language, key: &str) -> Option<&'static str> {
    table(lang)
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, text)| *text)
}

/// Picks the language from an `Accept-Language` header value, else `default`.
///
/// Ranges are tried by falling quality (`q`), in header order on ties; a range matches by its
/// primary subtag, so `ru-RU` means Russian. `*` stands for `default`. A range with `q=0` rules a
/// language out. Malformed ranges and unknown languages are skipped.
pub fn negotiate_language(accept_language: Option<&str>, default: Language) -> Language {
    let Some(header) = accept_language else {
        return default;
    };
    // (quality in thousandths, range); at most 32 ranges are looked at.
    let mut ranges: Vec<(u16, &str)> = Vec::new();
    for item in header.split(',').take(32) {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or_default().trim();
        if range.is_empty() {
            continue;
        }
        let mut quality = Some(1000);
        for param in parts {
            let param = param.trim();
            if let Some(value) = param
                .strip_prefix("q=")
                .or_else(|| param.strip_prefix("Q="))
            {
                quality = parse_quality(value.trim());
            }
        }
        if let Some(q) = quality {
            ranges.push((q, range));
        }
    }
    // Stable: equal qualities keep header order.
    ranges.sort_by_key(|&(q, _)| std::cmp::Reverse(q));
    let excluded = |lang: Language| {
        ranges
            .iter()
            .any(|&(q, range)| q == 0 && range.eq_ignore_ascii_case(lang.code()))
    };
    for &(q, range) in &ranges {
        if q == 0 {
            break;
        }
        if range == "*" {
            if !excluded(default) {
                return default;
            }
            if let Some(other) = Language::ALL.into_iter().find(|&l| !excluded(l)) {
                return other;
            }
            continue;
        }
        let primary = range.split(['-', '_']).next().unwrap_or_default();
        if let Some(lang) = Language::from_code(primary) {
            if !excluded(lang) {
                return lang;
            }
        }
    }
    default
}

/// A `q` value (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_quality(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, digit) in frac.bytes().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
}

/// Index of the plural form for `n`: English has two (one, other), Russian three (one, few, many).
pub(crate) fn plural_index(lang: Language, n: u64) -> usize {
    match lang {
        Language::En => usize::from(n != 1),
        Language::Ru => {
            let (d10, d100) = (n % 10, n % 100);
            if d10 == 1 && d100 != 11 {
                0
            } else if (2..=4).contains(&d10) && !(12..=14).contains(&d100) {
                1
            } else {
                2
            }
        }
    }
}

#[cfg(test)]
/// How many plural forms the language's plural entries hold.
pub(crate) fn plural_forms(lang: Language) -> usize {
    match lang {
        Language::En => 2,
        Language::Ru => 3,
    }
}

#[cfg(test)]
/// Entries whose text is a `|`-separated list of plural forms.
pub(crate) const PLURAL_KEYS: &[&str] = &["minutes", "digits", "admin_clients_count"];

const EN: &[(&str, &str)] = &[
    // Page frame.
    ("sign_in", "Sign in"),
    ("sign_in_to", "Sign in to {page}"),
    // Email form.
    (
        "email_intro",
        "Enter your email address. If it has access to this page, we will send you a sign-in code.",
    ),
    (
        "email_intro_site",
        "Enter your email address. If it has access, we will send you a sign-in code.",
    ),
    ("email_label", "Email address"),
    ("send_code", "Send code"),
    // Code form.
    ("code_heading", "Check your email"),
    (
        "code_sent",
        "If {email} has access, a sign-in code is on its way. It can take a minute to arrive.",
    ),
    ("code_label", "Sign-in code"),
    (
        "code_hint",
        "The code has {digits}. You can also open the link in the mail instead.",
    ),
    ("verify", "Sign in"),
    (
        "no_mail",
        "No mail? Check your spam folder, or ask for a new code.",
    ),
    ("resend", "Send a new code"),
    ("another_email", "Use another email"),
    // Link confirmation.
    ("link_heading", "Confirm sign-in"),
    (
        "link_text",
        "To finish signing in to {page}, press the button below.",
    ),
    (
        "link_text_site",
        "To finish signing in, press the button below.",
    ),
    ("link_button", "Sign in"),
    ("link_account", "You will be signed in as {email}."),
    (
        "link_elsewhere",
        "This link was asked for in another browser. Continue only if you asked for it \
         yourself: anyone can send you a sign-in link to their own account, and what you then \
         do here would be done as them.",
    ),
    (
        "link_elsewhere_confirm",
        "I asked for this link, and {email} is my address",
    ),
    // A shop's sign-in link, opened right after payment.
    ("signin_heading", "Welcome"),
    (
        "signin_text",
        "Thank you for your purchase. Press the button below to open {page}.",
    ),
    (
        "signin_text_site",
        "Thank you for your purchase. Press the button below to open it.",
    ),
    ("signin_button", "Sign in and open"),
    ("signin_gone_heading", "This link was already used"),
    (
        "signin_gone_text",
        "This sign-in link was already used or has expired. To open {page}, sign in with a \
         one-time code sent to your email.",
    ),
    (
        "signin_gone_text_site",
        "This sign-in link was already used or has expired. Sign in with a one-time code sent \
         to your email.",
    ),
    ("signin_gone_button", "Sign in with a code"),
    // Rate limit.
    ("rate_limited_heading", "Too many attempts"),
    (
        "rate_limited_text",
        "To keep accounts safe, signing in is paused for a while. Please try again in {minutes}.",
    ),
    // Signed out.
    ("logged_out_heading", "You are signed out"),
    (
        "logged_out_text",
        "Your session has ended. To come back, you will need to sign in again.",
    ),
    ("home_link", "Go to the home page"),
    // Error page.
    ("error_status", "Error {status}"),
    // Messages the flow passes by key.
    ("invalid_email", "Please enter a valid email address."),
    ("wrong_code", "That code is not right or has expired."),
    (
        "code_expired",
        "This code has expired. Please ask for a new one.",
    ),
    (
        "too_many_attempts",
        "Too many attempts. Please wait a little and try again.",
    ),
    (
        "send_failed",
        "We could not send the mail, please try again.",
    ),
    ("csrf", "The form expired, please try again."),
    (
        "link_used",
        "This sign-in link was already used or has expired.",
    ),
    ("link_invalid_title", "Link not valid"),
    (
        "link_confirm_account",
        "Please confirm that this is your account.",
    ),
    (
        "link_invalid",
        "This sign-in link is not valid: it was already used or has expired. Open the page again to get a new code.",
    ),
    ("error_title", "Something went wrong"),
    (
        "error",
        "Something went wrong on our side. Please try again.",
    ),
    // Plurals: one | other.
    ("minutes", "{n} minute|{n} minutes"),
    ("digits", "{n} digit|{n} digits"),
    // Login mail.
    ("mail_subject", "Sign in to {page} — {site}"),
    ("mail_subject_site", "Sign in to {site}"),
    ("mail_preheader", "Your sign-in code and link for {site}"),
    ("mail_greeting_name", "Hello {name},"),
    ("mail_greeting", "Hello,"),
    (
        "mail_intro",
        "Here is your code to sign in to {page} on {site}:",
    ),
    ("mail_intro_site", "Here is your code to sign in to {site}:"),
    ("mail_link_intro", "Or sign in with one click:"),
    ("mail_button", "Sign in"),
    (
        "mail_link_fallback",
        "If the button does not work, copy this address into your browser:",
    ),
    (
        "mail_validity",
        "The code and the link are valid for {minutes} and work only once.",
    ),
    (
        "mail_ignore",
        "If you did not ask to sign in, you can safely ignore this mail.",
    ),
    // Welcome mail, sent on a grant with "notify": true.
    ("welcome_subject", "Your access to {page} — {site}"),
    ("welcome_intro", "You now have access to {page} on {site}."),
    ("welcome_until", "Your access lasts through {date}."),
    ("welcome_unlimited", "Your access has no end date."),
    (
        "welcome_how",
        "To open it, follow the link and sign in with this email address: we will mail you a one-time code.",
    ),
    ("welcome_button", "Open"),
    // Admin page.
    ("admin_title", "Clients"),
    ("admin_sign_in", "Admin sign-in"),
    (
        "admin_email_intro",
        "Enter your admin email address. If it is on the admin list, we will send you a sign-in code.",
    ),
    (
        "admin_code_sent",
        "If {email} is an admin address, a sign-in code is on its way. It can take a minute to arrive.",
    ),
    ("admin_code_hint", "The code has {digits}."),
    ("admin_signed_in_as", "Signed in as {email}"),
    ("admin_sign_out", "Sign out"),
    ("admin_pages_heading", "Pages and their clients"),
    (
        "admin_pages_intro",
        "Choose a page to see, add, change or remove the people who may sign in to it.",
    ),
    ("admin_clients_count", "{n} client|{n} clients"),
    ("admin_with_access", "{n} with access"),
    ("admin_no_pages", "This site has no protected pages."),
    ("admin_all_pages", "All pages"),
    ("admin_search_label", "Search by name or email"),
    ("admin_search", "Search"),
    ("admin_clear", "Show all"),
    ("admin_add_client", "Add a client"),
    ("admin_export", "Export CSV"),
    ("admin_import_heading", "Import CSV"),
    ("admin_col_name", "Name"),
    ("admin_col_email", "Email"),
    ("admin_col_until", "Access until"),
    ("admin_col_source", "Added by"),
    ("admin_col_login", "Last sign-in"),
    ("admin_col_status", "Status"),
    ("admin_col_actions", "Actions"),
    ("admin_unlimited", "unlimited"),
    ("admin_never", "never"),
    ("admin_active", "has access"),
    ("admin_expired", "expired"),
    ("admin_source_admin", "admin"),
    ("admin_source_cli", "command line"),
    ("admin_source_grant", "grant (shop)"),
    ("admin_source_import", "import"),
    ("admin_source_demo", "demo"),
    ("admin_extend", "Extend by {n} days"),
    ("admin_edit", "Edit"),
    ("admin_access", "Access"),
    ("admin_access_keep", "Keep as it is"),
    ("admin_access_until", "Until and including"),
    ("admin_access_days", "Days from today:"),
    ("admin_access_unlimited", "Unlimited"),
    ("admin_save", "Save"),
    ("admin_remove", "Remove"),
    (
        "admin_remove_confirm",
        "Remove {email} from this page? Their access ends at once.",
    ),
    ("admin_remove_button", "Yes, remove"),
    (
        "admin_no_clients",
        "No clients yet. Add the first one below.",
    ),
    ("admin_no_match", "No client matches the search."),
    ("admin_paging", "Pages of the list"),
    ("admin_showing", "{from}–{to} of {total}"),
    ("admin_prev", "Previous"),
    ("admin_first", "First"),
    ("admin_next", "Next"),
    ("admin_optional", "(optional)"),
    ("admin_add_button", "Add client"),
    (
        "admin_import_intro",
        "One client per line: email, name, last day of access (YYYY-MM-DD; empty for unlimited). A first line naming the columns is optional, so a file from “Export CSV” can be imported as it is. Clients already on the list are updated.",
    ),
    ("admin_import_file", "CSV file"),
    ("admin_import_text", "Or paste the lines"),
    ("admin_import_button", "Import"),
    ("admin_added", "{email} was added."),
    ("admin_updated", "{email} was changed."),
    (
        "admin_extended",
        "Access for {email} was extended by {n} days.",
    ),
    ("admin_removed", "{email} was removed."),
    (
        "admin_imported",
        "Import done: {added} added, {updated} updated.",
    ),
    (
        "admin_err_exists",
        "{email} is already a client of this page. Use Edit in the list to change it.",
    ),
    ("admin_err_missing", "{email} is not a client of this page."),
    (
        "admin_err_name",
        "The name can have at most 200 characters and no control characters.",
    ),
    ("admin_err_until", "Please choose a date in the future."),
    (
        "admin_err_days",
        "Please enter a number of days from 1 to 36500.",
    ),
    (
        "admin_err_access_choice",
        "You entered a date or a number of days: choose “Until” or “Days” to use it, or clear the field.",
    ),
    (
        "admin_err_import",
        "Nothing was imported. Please fix these lines:",
    ),
    (
        "admin_err_import_some",
        "These lines were not imported. Please fix them and import them again:",
    ),
    (
        "admin_err_import_empty",
        "Please choose a CSV file or paste the lines.",
    ),
    (
        "admin_err_import_size",
        "The import is too large: at most {n} lines at a time.",
    ),
    (
        "admin_line_email",
        "Line {line}: not a valid email address.",
    ),
    (
        "admin_line_name",
        "Line {line}: the name is longer than 200 characters or has control characters.",
    ),
    (
        "admin_line_until",
        "Line {line}: the access end is not a date (YYYY-MM-DD).",
    ),
    (
        "admin_line_twice",
        "Line {line}: this email is listed twice.",
    ),
    ("admin_line_quote", "Line {line}: a quote is not closed."),
    (
        "admin_line_unreadable",
        "Line {line}: the line cannot be read.",
    ),
    (
        "admin_line_column",
        "Line {line}: unknown column “{column}”; the columns are email, name and until.",
    ),
    (
        "admin_line_column_twice",
        "Line {line}: the column “{column}” appears twice.",
    ),
    (
        "admin_line_cells",
        "Line {line}: expected at most 3 cells: email, name, until.",
    ),
    ("admin_mail_subject", "Admin sign-in code — {site}"),
    (
        "admin_mail_intro",
        "Here is your code to sign in to the admin page of {site}:",
    ),
    (
        "admin_mail_validity",
        "The code is valid for {minutes} and works only once.",
    ),
    (
        "admin_mail_ignore",
        "If you did not ask to sign in, you can safely ignore this mail.",
    ),
];

const RU: &[(&str, &str)] = &[
    // Page frame.
    ("sign_in", "Вход"),
    ("sign_in_to", "Вход на страницу «{page}»"),
    // Email form.
    (
        "email_intro",
        "Введите адрес электронной почты. Если у него есть доступ к этой странице, мы пришлём на него код для входа.",
    ),
    (
        "email_intro_site",
        "Введите адрес электронной почты. Если у него есть доступ, мы пришлём на него код для входа.",
    ),
    ("email_label", "Адрес электронной почты"),
    ("send_code", "Получить код"),
    // Code form.
    ("code_heading", "Проверьте почту"),
    (
        "code_sent",
        "Если у адреса {email} есть доступ, код для входа уже отправлен. Письмо может прийти не сразу.",
    ),
    ("code_label", "Код для входа"),
    (
        "code_hint",
        "Код состоит из {digits}. Можно также просто открыть ссылку из письма.",
    ),
    ("verify", "Войти"),
    (
        "no_mail",
        "Письмо не пришло? Проверьте папку «Спам» или запросите новый код.",
    ),
    ("resend", "Отправить новый код"),
    ("another_email", "Указать другой адрес"),
    // Link confirmation.
    ("link_heading", "Подтвердите вход"),
    (
        "link_text",
        "Чтобы завершить вход на страницу «{page}», нажмите кнопку ниже.",
    ),
    (
        "link_text_site",
        "Чтобы завершить вход, нажмите кнопку ниже.",
    ),
    ("link_button", "Войти"),
    ("link_account", "Вы войдёте как {email}."),
    (
        "link_elsewhere",
        "Эту ссылку запросили в другом браузере. Продолжайте, только если вы запросили её сами: \
         кто угодно может прислать вам ссылку для входа в свою учётную запись, и всё, что вы \
         затем сделаете здесь, будет сделано от его имени.",
    ),
    (
        "link_elsewhere_confirm",
        "Я запросил(а) эту ссылку, и {email} — мой адрес",
    ),
    // A shop's sign-in link, opened right after payment.
    ("signin_heading", "Добро пожаловать"),
    (
        "signin_text",
        "Спасибо за покупку. Нажмите кнопку ниже, чтобы открыть страницу «{page}».",
    ),
    (
        "signin_text_site",
        "Спасибо за покупку. Нажмите кнопку ниже, чтобы открыть её.",
    ),
    ("signin_button", "Войти и открыть"),
    ("signin_gone_heading", "Ссылка уже использована"),
    (
        "signin_gone_text",
        "Эта ссылка для входа уже использована или устарела. Чтобы открыть страницу «{page}», \
         войдите с одноразовым кодом, который придёт на вашу почту.",
    ),
    (
        "signin_gone_text_site",
        "Эта ссылка для входа уже использована или устарела. Войдите с одноразовым кодом, \
         который придёт на вашу почту.",
    ),
    ("signin_gone_button", "Войти с кодом"),
    // Rate limit.
    ("rate_limited_heading", "Слишком много попыток"),
    (
        "rate_limited_text",
        "Ради безопасности вход временно приостановлен. Попробуйте снова через {minutes}.",
    ),
    // Signed out.
    ("logged_out_heading", "Вы вышли"),
    (
        "logged_out_text",
        "Сеанс завершён. Чтобы вернуться, нужно будет войти снова.",
    ),
    ("home_link", "Перейти на главную"),
    // Error page.
    ("error_status", "Ошибка {status}"),
    // Messages the flow passes by key.
    (
        "invalid_email",
        "Введите корректный адрес электронной почты.",
    ),
    ("wrong_code", "Код неверный, или срок его действия истёк."),
    ("code_expired", "Срок действия кода истёк. Запросите новый."),
    (
        "too_many_attempts",
        "Слишком много попыток. Подождите немного и попробуйте снова.",
    ),
    (
        "send_failed",
        "Не удалось отправить письмо. Попробуйте ещё раз.",
    ),
    ("csrf", "Срок действия формы истёк. Попробуйте ещё раз."),
    (
        "link_used",
        "Эта ссылка для входа уже использована, или срок её действия истёк.",
    ),
    ("link_invalid_title", "Ссылка недействительна"),
    (
        "link_confirm_account",
        "Подтвердите, что это ваша учётная запись.",
    ),
    (
        "link_invalid",
        "Эта ссылка для входа недействительна: она уже использована, или срок её действия истёк. Откройте страницу снова, чтобы получить новый код.",
    ),
    ("error_title", "Что-то пошло не так"),
    (
        "error",
        "На нашей стороне произошла ошибка. Попробуйте ещё раз.",
    ),
    // Plurals: one | few | many (accusative for minutes: «через 5 минут», «действуют 1 минуту»;
    // genitive for digits: «из 6 цифр», «из 1 цифры»).
    ("minutes", "{n} минуту|{n} минуты|{n} минут"),
    ("digits", "{n} цифры|{n} цифр|{n} цифр"),
    // Login mail.
    ("mail_subject", "Вход на страницу «{page}» — {site}"),
    ("mail_subject_site", "Вход на сайт «{site}»"),
    ("mail_preheader", "Код и ссылка для входа на сайт «{site}»"),
    ("mail_greeting_name", "Здравствуйте, {name}!"),
    ("mail_greeting", "Здравствуйте!"),
    (
        "mail_intro",
        "Ваш код для входа на страницу «{page}» сайта «{site}»:",
    ),
    ("mail_intro_site", "Ваш код для входа на сайт «{site}»:"),
    ("mail_link_intro", "Или войдите одним нажатием:"),
    ("mail_button", "Войти"),
    (
        "mail_link_fallback",
        "Если кнопка не работает, скопируйте этот адрес в браузер:",
    ),
    (
        "mail_validity",
        "Код и ссылка действуют {minutes}; использовать их можно только один раз.",
    ),
    (
        "mail_ignore",
        "Если вы не запрашивали вход, просто не обращайте внимания на это письмо.",
    ),
    // Письмо о выданном доступе ("notify": true).
    ("welcome_subject", "Доступ к «{page}» — {site}"),
    (
        "welcome_intro",
        "Вам открыт доступ к странице «{page}» на сайте «{site}».",
    ),
    ("welcome_until", "Доступ действует по {date} включительно."),
    ("welcome_unlimited", "Доступ бессрочный."),
    (
        "welcome_how",
        "Чтобы войти, откройте ссылку и укажите этот адрес почты: мы пришлём одноразовый код.",
    ),
    ("welcome_button", "Открыть"),
    // Admin page.
    ("admin_title", "Клиенты"),
    ("admin_sign_in", "Вход для администратора"),
    (
        "admin_email_intro",
        "Введите адрес администратора. Если он есть в списке администраторов, мы пришлём на него код для входа.",
    ),
    (
        "admin_code_sent",
        "Если {email} — адрес администратора, код для входа уже отправлен. Письмо может прийти не сразу.",
    ),
    ("admin_code_hint", "Код состоит из {digits}."),
    ("admin_signed_in_as", "Вы вошли как {email}"),
    ("admin_sign_out", "Выйти"),
    ("admin_pages_heading", "Страницы и их клиенты"),
    (
        "admin_pages_intro",
        "Выберите страницу, чтобы посмотреть, добавить, изменить или удалить тех, кто может на неё входить.",
    ),
    ("admin_clients_count", "{n} клиент|{n} клиента|{n} клиентов"),
    ("admin_with_access", "с доступом: {n}"),
    ("admin_no_pages", "На этом сайте нет закрытых страниц."),
    ("admin_all_pages", "Все страницы"),
    ("admin_search_label", "Поиск по имени или адресу"),
    ("admin_search", "Найти"),
    ("admin_clear", "Показать всех"),
    ("admin_add_client", "Добавить клиента"),
    ("admin_export", "Выгрузить CSV"),
    ("admin_import_heading", "Загрузить CSV"),
    ("admin_col_name", "Имя"),
    ("admin_col_email", "Адрес"),
    ("admin_col_until", "Доступ до"),
    ("admin_col_source", "Кто добавил"),
    ("admin_col_login", "Последний вход"),
    ("admin_col_status", "Статус"),
    ("admin_col_actions", "Действия"),
    ("admin_unlimited", "без ограничения"),
    ("admin_never", "не входил"),
    ("admin_active", "есть доступ"),
    ("admin_expired", "доступ истёк"),
    ("admin_source_admin", "администратор"),
    ("admin_source_cli", "командная строка"),
    ("admin_source_grant", "выдача (магазин)"),
    ("admin_source_import", "импорт"),
    ("admin_source_demo", "демо"),
    ("admin_extend", "Продлить на {n} дн."),
    ("admin_edit", "Изменить"),
    ("admin_access", "Доступ"),
    ("admin_access_keep", "Оставить как есть"),
    ("admin_access_until", "До даты включительно"),
    ("admin_access_days", "Дней с сегодняшнего:"),
    ("admin_access_unlimited", "Без ограничения"),
    ("admin_save", "Сохранить"),
    ("admin_remove", "Удалить"),
    (
        "admin_remove_confirm",
        "Удалить {email} с этой страницы? Доступ закончится сразу.",
    ),
    ("admin_remove_button", "Да, удалить"),
    (
        "admin_no_clients",
        "Клиентов пока нет. Добавьте первого ниже.",
    ),
    ("admin_no_match", "По запросу никого не нашлось."),
    ("admin_paging", "Страницы списка"),
    ("admin_showing", "{from}–{to} из {total}"),
    ("admin_prev", "Назад"),
    ("admin_first", "В начало"),
    ("admin_next", "Дальше"),
    ("admin_optional", "(необязательно)"),
    ("admin_add_button", "Добавить"),
    (
        "admin_import_intro",
        "По клиенту на строку: адрес, имя, последний день доступа (ГГГГ-ММ-ДД; пусто — без ограничения). Первая строка с названиями столбцов необязательна, поэтому файл из «Выгрузить CSV» можно загрузить как есть. Клиенты, которые уже есть в списке, обновляются.",
    ),
    ("admin_import_file", "Файл CSV"),
    ("admin_import_text", "Или вставьте строки"),
    ("admin_import_button", "Загрузить"),
    ("admin_added", "{email} добавлен(а)."),
    ("admin_updated", "Данные {email} изменены."),
    ("admin_extended", "Доступ для {email} продлён на {n} дн."),
    ("admin_removed", "{email} удалён(а)."),
    (
        "admin_imported",
        "Загрузка завершена: добавлено {added}, обновлено {updated}.",
    ),
    (
        "admin_err_exists",
        "{email} уже есть в списке этой страницы. Чтобы изменить данные, нажмите «Изменить» в списке.",
    ),
    ("admin_err_missing", "{email} нет в списке этой страницы."),
    (
        "admin_err_name",
        "Имя может быть не длиннее 200 символов и без управляющих символов.",
    ),
    ("admin_err_until", "Выберите дату в будущем."),
    ("admin_err_days", "Введите число дней от 1 до 36500."),
    (
        "admin_err_access_choice",
        "Вы ввели дату или число дней: выберите «До даты» или «Дней», чтобы их применить, или очистите поле.",
    ),
    (
        "admin_err_import",
        "Ничего не загружено. Исправьте эти строки:",
    ),
    (
        "admin_err_import_some",
        "Эти строки не загружены. Исправьте их и загрузите снова:",
    ),
    (
        "admin_err_import_empty",
        "Выберите файл CSV или вставьте строки.",
    ),
    (
        "admin_err_import_size",
        "Слишком много строк: за раз можно загрузить не больше {n}.",
    ),
    ("admin_line_email", "Строка {line}: неверный адрес почты."),
    (
        "admin_line_name",
        "Строка {line}: имя длиннее 200 символов или содержит управляющие символы.",
    ),
    (
        "admin_line_until",
        "Строка {line}: конец доступа — не дата (ГГГГ-ММ-ДД).",
    ),
    (
        "admin_line_twice",
        "Строка {line}: этот адрес встречается дважды.",
    ),
    ("admin_line_quote", "Строка {line}: не закрыта кавычка."),
    (
        "admin_line_unreadable",
        "Строка {line}: строку не удаётся прочитать.",
    ),
    (
        "admin_line_column",
        "Строка {line}: неизвестный столбец «{column}»; столбцы: email, name и until.",
    ),
    (
        "admin_line_column_twice",
        "Строка {line}: столбец «{column}» встречается дважды.",
    ),
    (
        "admin_line_cells",
        "Строка {line}: больше трёх ячеек; ожидаются адрес, имя и дата.",
    ),
    (
        "admin_mail_subject",
        "Код для входа администратора — {site}",
    ),
    (
        "admin_mail_intro",
        "Ваш код для входа на страницу администратора сайта «{site}»:",
    ),
    (
        "admin_mail_validity",
        "Код действует {minutes}; использовать его можно только один раз.",
    ),
    (
        "admin_mail_ignore",
        "Если вы не запрашивали вход, просто не обращайте внимания на это письмо.",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn placeholders(text: &str) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else { break };
            out.insert(&after[..end]);
            rest = &after[end + 1..];
        }
        out
    }

    #[test]
    fn every_key_is_in_every_language_once() {
        let keys = |lang| -> Vec<&str> { table(lang).iter().map(|(k, _)| *k).collect() };
        let en = keys(Language::En);
        let unique: BTreeSet<&str> = en.iter().copied().collect();
        assert_eq!(unique.len(), en.len(), "duplicate key in the English table");
        for lang in Language::ALL {
            let these = keys(lang);
            let set: BTreeSet<&str> = these.iter().copied().collect();
            assert_eq!(set.len(), these.len(), "duplicate key in {lang:?}");
            let missing: Vec<_> = unique.difference(&set).collect();
            let extra: Vec<_> = set.difference(&unique).collect();
            assert!(missing.is_empty(), "{lang:?} lacks {missing:?}");
            assert!(
                extra.is_empty(),
                "{lang:?} has keys English lacks: {extra:?}"
            );
        }
    }

    #[test]
    fn message_keys_exist_and_texts_are_not_empty() {
        for lang in Language::ALL {
            for key in MESSAGE_KEYS {
                assert!(lookup(lang, key).is_some(), "{lang:?} lacks message {key}");
            }
            for (key, text) in table(lang) {
                assert!(!text.trim().is_empty(), "{lang:?}.{key} is empty");
                assert!(!text.contains("{{"), "{lang:?}.{key} has template syntax");
            }
        }
    }

    #[test]
    fn placeholders_match_across_languages() {
        for (key, en) in EN {
            let want = placeholders(en);
            for lang in Language::ALL {
                let text = lookup(lang, key).unwrap_or_default();
                assert_eq!(placeholders(text), want, "{lang:?}.{key}");
            }
        }
    }

    #[test]
    fn plural_entries_have_one_form_per_category() {
        for lang in Language::ALL {
            for key in PLURAL_KEYS {
                let text = lookup(lang, key).unwrap_or_default();
                assert_eq!(
                    text.split('|').count(),
                    plural_forms(lang),
                    "{lang:?}.{key}"
                );
            }
            for (key, text) in table(lang) {
                if !PLURAL_KEYS.contains(key) {
                    assert!(!text.contains('|'), "{lang:?}.{key} has a stray `|`");
                }
            }
        }
    }

    #[test]
    fn negotiation() {
        use Language::{En, Ru};
        let cases: &[(Option<&str>, Language, Language)] = &[
            (Some("ru-RU,ru;q=0.9,en;q=0.8"), En, Ru),
            (Some("de, en;q=0.5"), Ru, En),
            (Some("*"), Ru, Ru),
            (Some("*"), En, En),
            (Some("garbage"), Ru, Ru),
            (Some(";;;,,,q=;"), En, En),
            (Some("\u{0}\u{1}ü"), Ru, Ru),
            (Some("en;q=0, ru"), En, Ru),
            (Some("en;q=0.1, ru;q=0.2"), En, Ru),
            (Some("RU"), En, Ru),
            (Some("ru_RU"), En, Ru),
            (Some("en-GB;q=0.8, ru;q=0.7"), Ru, En),
            (Some("en;q=0.5, ru;q=0.5"), Ru, En),
            (Some("ru;q=2, en"), Ru, En),
            (Some("ru;q=abc"), En, En),
            (Some("en;q=0, *"), En, Ru),
            (Some("de, fr;q=0.9"), Ru, Ru),
            (Some(""), Ru, Ru),
            (None, Ru, Ru),
            (None, En, En),
        ];
        for &(header, default, want) in cases {
            assert_eq!(
                negotiate_language(header, default),
                want,
                "{header:?} default {default:?}"
            );
        }
    }

    #[test]
    fn quality_values() {
        assert_eq!(parse_quality("1"), Some(1000));
        assert_eq!(parse_quality("1.000"), Some(1000));
        assert_eq!(parse_quality("0.5"), Some(500));
        assert_eq!(parse_quality("0.05"), Some(50));
        assert_eq!(parse_quality("0"), Some(0));
        assert_eq!(parse_quality("1.5"), None);
        assert_eq!(parse_quality("0.1234"), None);
        assert_eq!(parse_quality("-1"), None);
        assert_eq!(parse_quality(""), None);
    }

    #[test]
    fn russian_plural_rule() {
        let form = |n| plural_index(Language::Ru, n);
        for (n, want) in [
            (0, 2),
            (1, 0),
            (2, 1),
            (4, 1),
            (5, 2),
            (11, 2),
            (12, 2),
            (14, 2),
            (21, 0),
            (22, 1),
            (25, 2),
            (101, 0),
            (111, 2),
        ] {
            assert_eq!(form(n), want, "{n}");
        }
        assert_eq!(plural_index(Language::En, 1), 0);
        assert_eq!(plural_index(Language::En, 0), 1);
        assert_eq!(plural_index(Language::En, 2), 1);
    }
}
